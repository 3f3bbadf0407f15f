"""Comparing two token sequences: the helpers every count-based suite uses.

``count_mismatches`` is the original workflow's measure (positional differences over
the shorter length plus the length difference). ``first_divergence`` says where two
greedy sequences part; after it they are conditioned on different prefixes, so
positions beyond it say little about the engine (see docs/suites.md); the near-tie rule
(:mod:`pytest_groundtruth.measures.near_ties`) decides when a first flip is one a correct
engine may make.
"""

from __future__ import annotations

from collections.abc import Sequence


def count_mismatches(a: Sequence[int], b: Sequence[int]) -> int:
    """Positional differences over the shorter length + ``|len(a) - len(b)|``."""
    shorter = min(len(a), len(b))
    return sum(1 for i in range(shorter) if a[i] != b[i]) + abs(len(a) - len(b))


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where the sequences differ (a length difference counts), or None."""
    shorter = min(len(a), len(b))
    for i in range(shorter):
        if a[i] != b[i]:
            return i
    return shorter if len(a) != len(b) else None


def mismatch_positions(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Every position < max length where the sequences differ (missing counts as differing)."""
    return [
        i
        for i in range(max(len(a), len(b)))
        if i >= len(a) or i >= len(b) or a[i] != b[i]
    ]
