"""The apr stand-in: see :mod:`pytest_groundtruth.standins.apr.cli`."""
