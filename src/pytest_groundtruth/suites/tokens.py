"""Comparing a generation with a reference: the measure every token-level suite shares.

Near ties: when the oracle's top-1 and top-2 log-probabilities are closer than its
``near_tie_margin``, a correct engine may pick either. With ``near_ties = "exempt"`` a
first divergence at such a position, where the runtime picked the oracle's runner-up,
is not counted, and the positions after it are not compared either (the sequences are
then conditioned on different prefixes). The exemption is always reported in the
result's notes, never applied silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_groundtruth.compare import count_mismatches, first_divergence, mismatch_positions
from pytest_groundtruth.oracle_format import Oracle


@dataclass(frozen=True)
class TokenComparison:
    mismatches: int  # count_mismatches, the original measure
    counted: int  # what the bound is checked against (after a near-tie exemption)
    first: int | None  # first divergence
    positions: tuple[int, ...]  # every differing position
    exempt_at: int | None = None  # the near-tie flip that was not counted
    note: str = ""


def near_tie_flip(oracle: Oracle, tokens: Sequence[int], pos: int) -> bool:
    """Did the runtime pick the oracle's runner-up at a near-tie position ``pos``?"""
    if pos >= len(tokens) or pos >= len(oracle.steps) or pos not in oracle.near_ties:
        return False
    step = oracle.steps[pos]
    return len(step.ids) > 1 and tokens[pos] == step.ids[1]


def compare(oracle: Oracle | None, reference: Sequence[int], tokens: Sequence[int],
            near_ties: str = "count") -> TokenComparison:
    mismatches = count_mismatches(reference, tokens)
    first = first_divergence(reference, tokens)
    positions = tuple(mismatch_positions(reference, tokens))
    if (
        near_ties == "exempt"
        and oracle is not None
        and first is not None
        and near_tie_flip(oracle, tokens, first)
    ):
        margin = oracle.steps[first].margin
        return TokenComparison(
            mismatches, 0, first, positions, exempt_at=first,
            note=(
                f"near-tie flip at position {first} (oracle margin {margin:.3f} < "
                f"{oracle.near_tie_margin}): not counted, positions after it not compared "
                f"(near_ties = exempt); {mismatches} positional mismatches without the exemption"
            ),
        )
    return TokenComparison(mismatches, mismatches, first, positions)
