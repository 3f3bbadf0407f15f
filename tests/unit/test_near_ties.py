"""The near-tie rule: a first flip at a near tie of the reference is not counted; a flip at
a confident position is, and so is everything after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.measures.near_ties import MARGIN, compare, near_tie
from pytest_groundtruth.oracle.format import load_oracle

ROOT = Path(__file__).parents[2]


def step(*pairs: tuple[int, float]) -> TopK:
    return TopK(tuple(i for i, _ in pairs), tuple(lp for _, lp in pairs))


# the reference: tokens 1 2 3 4; at position 1 token 2 leads 9 by 0.05 nats (a near tie),
# at position 2 token 3 leads 8 by 1.5 (confident)
REFERENCE = (1, 2, 3, 4)
STEPS = (step((1, -0.1), (5, -3.0)), step((2, -0.70), (9, -0.75), (7, -2.0)),
         step((3, -0.2), (8, -1.7)), step((4, -0.1), (6, -2.5)))


def test_a_flip_at_a_near_tie_is_not_counted_nor_anything_after_it() -> None:
    cmp = compare(REFERENCE, (1, 9, 0, 0), "rule", STEPS)
    assert cmp.first == 1
    assert cmp.mismatches == 3
    assert cmp.counted == 0
    assert cmp.tie is not None
    assert cmp.tie.position == 1
    assert cmp.tie.gap == pytest.approx(0.05)
    assert "near tie at position 1" in cmp.note
    assert "3 positional mismatches" in cmp.note


def test_a_flip_at_a_confident_position_counts_everything() -> None:
    cmp = compare(REFERENCE, (1, 2, 8, 4), "rule", STEPS)
    assert (cmp.first, cmp.counted, cmp.tie, cmp.note) == (2, 1, None, "")


def test_a_later_flip_after_agreement_is_judged_at_its_own_position() -> None:
    # the first divergence is at the confident position 2, not at the near tie 1
    assert near_tie(REFERENCE, (1, 2, 8), STEPS) is None


def test_a_token_outside_the_margin_or_the_top_k_is_no_near_tie() -> None:
    assert near_tie(REFERENCE, (1, 7, 3, 4), STEPS) is None  # 1.3 nats below
    assert near_tie(REFERENCE, (1, 42, 3, 4), STEPS) is None  # not in the top-k
    assert near_tie(REFERENCE, (1, 9), STEPS, margin=0.04) is None


def test_the_runtime_must_find_the_reference_token_plausible_where_its_top_k_is_known(
) -> None:
    theirs_with = (STEPS[0], step((9, -0.6), (2, -0.8)))
    theirs_without = (STEPS[0], step((9, -0.1), (11, -3.0)))
    assert near_tie(REFERENCE, (1, 9), STEPS, theirs_with) is not None
    assert near_tie(REFERENCE, (1, 9), STEPS, theirs_without) is None


def test_a_length_difference_is_never_a_near_tie() -> None:
    assert compare(REFERENCE, (1, 2), "rule", STEPS).counted == 2
    assert compare(REFERENCE, (1, 2, 3, 4, 5), "rule", STEPS).counted == 1


def test_count_mode_counts_every_position_and_exempt_is_the_rule() -> None:
    assert compare(REFERENCE, (1, 9, 0, 0), "count", STEPS).counted == 3
    assert compare(REFERENCE, (1, 9, 0, 0), "exempt", STEPS).counted == 0


def test_without_the_reference_top_k_every_position_counts_and_the_note_says_why() -> None:
    cmp = compare(REFERENCE, (1, 9, 0, 0), "rule", None, name="the oracle x/y")
    assert cmp.counted == 3
    assert "the oracle x/y has no top-k" in cmp.note


def test_the_margin_separates_the_committed_oracle_flips_of_correct_int8_files() -> None:
    """The near ties the embedded model's int8 conversions flip (docs/near-ties.md) sit
    below the margin; its confident positions above it."""
    capital = load_oracle(ROOT / "oracle" / "smollm2-135m" / "capital.json")
    assert capital.steps[0].margin < MARGIN  # llama.cpp int8 flips position 0
    assert capital.steps[1].margin > 10 * MARGIN
    flipped = list(capital.tokens)
    flipped[0] = capital.steps[0].ids[1]
    assert capital.compare(flipped).counted == 0
    confident = list(capital.tokens)
    confident[1] = capital.steps[1].ids[1]
    assert capital.compare(confident).counted == 1
