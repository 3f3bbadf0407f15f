"""The ``groundtruth`` command: its argument parser (:mod:`.main`) and the small
commands of the product itself (``convert``, ``clean``, ``models``). It parses and
calls; measurements about the package live in :mod:`pytest_groundtruth.lab`.
"""
