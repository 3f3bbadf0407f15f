"""Runtimes under test: the interface (base), the registry (entry points), the engines."""
