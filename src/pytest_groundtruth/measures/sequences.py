"""Comparing two token sequences: the helpers every count-based suite uses.

``count_mismatches`` is the original workflow's measure (positional differences over
the shorter length plus the length difference). ``first_divergence`` says where two
greedy sequences part; after it they are conditioned on different prefixes, so
positions beyond it say little about the engine (see docs/suites.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_groundtruth.measures.logprobs import TopK


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


# --------------------------------------------------------------------------- near ties
# When the oracle's top-1 and top-2 log-probabilities are closer than its
# ``near_tie_margin``, a correct engine may pick either. With ``near_ties = "exempt"`` a
# first divergence at such a position, where the runtime picked the oracle's runner-up,
# is not counted, and the positions after it are not compared either (the sequences are
# then conditioned on different prefixes). The exemption is always reported in the
# result's notes, never applied silently.


@dataclass(frozen=True)
class TokenComparison:
    mismatches: int  # count_mismatches, the original measure
    counted: int  # what the bound is checked against (after a near-tie exemption)
    first: int | None  # first divergence
    positions: tuple[int, ...]  # every differing position
    exempt_at: int | None = None  # the near-tie flip that was not counted
    note: str = ""


def near_tie_flip(steps: Sequence[TopK], margin: float, tokens: Sequence[int],
                  pos: int) -> bool:
    """Did the runtime pick the reference's runner-up at a near-tie position ``pos``?"""
    if pos >= len(tokens) or pos >= len(steps):
        return False
    step = steps[pos]
    return step.margin < margin and len(step.ids) > 1 and tokens[pos] == step.ids[1]


def compare(reference: Sequence[int], tokens: Sequence[int], near_ties: str = "count",
            steps: Sequence[TopK] = (), margin: float = 0.0) -> TokenComparison:
    """Compare ``tokens`` with ``reference``; ``steps`` are the reference's top-k per
    position (with ``margin`` its near-tie margin), used when ``near_ties == "exempt"``."""
    mismatches = count_mismatches(reference, tokens)
    first = first_divergence(reference, tokens)
    positions = tuple(mismatch_positions(reference, tokens))
    if near_ties == "exempt" and first is not None and near_tie_flip(steps, margin, tokens,
                                                                     first):
        return TokenComparison(
            mismatches, 0, first, positions, exempt_at=first,
            note=(
                f"near-tie flip at position {first} (oracle margin {steps[first].margin:.3f} < "
                f"{margin}): not counted, positions after it not compared "
                f"(near_ties = exempt); {mismatches} positional mismatches without the exemption"
            ),
        )
    return TokenComparison(mismatches, mismatches, first, positions)
