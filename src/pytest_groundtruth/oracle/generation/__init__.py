"""Generating the oracle files with the float32 transformers reference, and their
drift check. A layer above ``context/``: it runs the reference through the runtimes,
the runner pool and ``Context``, while ``config/`` and ``context/`` read the file
format below it (``oracle/format.py``, ``diff.py``, ``files.py``).
"""
