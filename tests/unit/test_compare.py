"""Properties of the comparison helpers every count-based suite relies on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pytest_groundtruth.measures.sequences import (
    count_mismatches,
    first_divergence,
    mismatch_positions,
)

tokens = st.lists(st.integers(min_value=0, max_value=50), max_size=40)


@given(tokens, tokens)
def test_symmetric(a: list[int], b: list[int]) -> None:
    assert count_mismatches(a, b) == count_mismatches(b, a)


@given(tokens, tokens)
def test_non_negative_and_bounded_by_the_longer_length(a: list[int], b: list[int]) -> None:
    assert 0 <= count_mismatches(a, b) <= max(len(a), len(b))


@given(tokens, tokens)
def test_zero_iff_equal(a: list[int], b: list[int]) -> None:
    assert (count_mismatches(a, b) == 0) == (a == b)


@given(tokens, tokens)
def test_first_divergence_is_the_first_mismatch_position(a: list[int], b: list[int]) -> None:
    positions = mismatch_positions(a, b)
    assert first_divergence(a, b) == (positions[0] if positions else None)
    if positions:
        assert a[: positions[0]] == b[: positions[0]]


@given(tokens, tokens)
def test_count_equals_positions_over_the_longer_sequence(a: list[int], b: list[int]) -> None:
    assert count_mismatches(a, b) == len(mismatch_positions(a, b))


def test_the_original_definition_on_examples() -> None:
    assert count_mismatches([1, 2, 3], [1, 2, 3]) == 0
    assert count_mismatches([1, 2, 3], [1, 9, 3]) == 1
    assert count_mismatches([2], [2, 5, 6]) == 2  # EOS first vs. two more tokens
    assert count_mismatches([], [1, 2]) == 2
    assert first_divergence([1, 2], [1, 2, 3]) == 2
