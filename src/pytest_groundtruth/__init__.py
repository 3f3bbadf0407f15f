"""pytest-groundtruth: falsification tests for LLM conversions and runtimes.

The pytest plugin lives in :mod:`pytest_groundtruth.plugin`; importing this package
does not import torch, transformers or any engine.
"""

__version__ = "0.1.0"
