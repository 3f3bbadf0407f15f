"""The paired comparison's check function, on plain numbers."""

from __future__ import annotations

import math
import random

import pytest

from pytest_groundtruth.measures.paired import blocks, interval, judge, t_quantile


@pytest.mark.parametrize(("df", "exact"), [(5, 3.365), (10, 2.764), (20, 2.528), (60, 2.390)])
def test_t_quantile_matches_the_table(df: int, exact: float) -> None:
    assert t_quantile(0.99, df) == pytest.approx(exact, abs=2e-3 if df > 5 else 2e-2)


def test_blocks_cut_long_texts_and_keep_prompts_whole() -> None:
    found = blocks({"code": [1.0] * 5, "text": [2.0] * 38}, size=16, split=("text",))
    assert [len(b) for b in found] == [5, 16, 22]  # a tail of 6 joins the block before


def test_identical_conversions_pass_with_a_zero_interval() -> None:
    kl = {"code": [0.1, 0.3], "text": [0.2] * 48}
    verdict = judge(kl, kl, margin=0.25, floor=1e-4, split=("text",))
    assert (verdict.kl.mean, verdict.kl.low, verdict.kl.high) == (0.0, 0.0, 0.0)
    assert verdict.passed
    assert verdict.margin == pytest.approx(0.25 * verdict.reference_kl)


def test_an_artifact_clearly_worse_than_the_margin_fails() -> None:
    rng = random.Random(0)
    ref = {"text": [rng.uniform(0.05, 0.35) for _ in range(240)]}
    worse = {"text": [v * 1.6 + rng.uniform(-0.01, 0.01) for v in ref["text"]]}
    verdict = judge(worse, ref, margin=0.25, floor=1e-4, split=("text",))
    assert not verdict.passed
    assert verdict.kl.low > verdict.margin
    assert verdict.relative == pytest.approx(0.6, abs=0.02)


def test_noise_around_a_correct_conversion_stays_inside() -> None:
    rng = random.Random(1)
    ref = {"text": [rng.uniform(0.05, 0.35) for _ in range(240)]}
    noisy = {"text": [v + rng.gauss(0, 0.05) for v in ref["text"]]}
    verdict = judge(noisy, ref, margin=0.25, floor=1e-4, split=("text",))
    assert verdict.passed
    assert verdict.kl.low < 0 < verdict.kl.high


def test_correlated_positions_widen_the_interval() -> None:
    # runs of 16 positions share one offset: per position the spread looks tiny, per block not
    rng = random.Random(2)
    diffs = [off for off in (rng.gauss(0, 0.05) for _ in range(15)) for _ in range(16)]
    per_block = interval(blocks({"text": diffs}, split=("text",)))
    per_position = interval([[d] for d in diffs])
    assert per_block.high - per_block.low > 2 * (per_position.high - per_position.low)


def test_mismatched_positions_are_an_error() -> None:
    with pytest.raises(ValueError, match="different positions"):
        judge({"a": [0.1, 0.2]}, {"a": [0.1]}, margin=0.25, floor=1e-4)
    one = interval([[0.5, 0.5]])
    assert one.blocks == 1
    assert math.isinf(one.low)
