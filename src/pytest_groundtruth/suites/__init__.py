"""Suites: what each concludes from runtime results (see catalog.py for the list)."""
