"""Runtimes under test; :func:`pytest_groundtruth.runtimes.registry.get_runtime` finds one."""
