"""The log-probability-aware instruments: vLLM's top-k rule and teacher-forced agreement."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_groundtruth.measures.agreement import agreement, bucket_kl
from pytest_groundtruth.measures.logprobs import log_softmax, top_k
from pytest_groundtruth.oracle.format import Oracle, load_oracle
from pytest_groundtruth.suites.topk import check

ROOT = Path(__file__).parents[2]
ORACLE = load_oracle(ROOT / "oracle" / "smollm2-135m" / "code.json")

rows = st.lists(st.floats(min_value=-20, max_value=20, allow_nan=False), min_size=12,
                max_size=40)


def oracle_from(logits: list[list[float]], k: int = 10) -> tuple[Oracle, np.ndarray]:
    lps = log_softmax(np.array(logits))
    steps = tuple(top_k(r, k) for r in lps)
    tokens = tuple(s.ids[0] for s in steps)
    oracle = replace(ORACLE, tokens=tokens, topk=steps,
                     max_new_tokens=max(len(tokens), 1))
    return oracle, lps


@settings(max_examples=50, deadline=None)
@given(st.lists(rows, min_size=1, max_size=6).filter(lambda r: len({len(x) for x in r}) == 1))
def test_oracle_against_itself_agrees_fully(logits: list[list[float]]) -> None:
    oracle, lps = oracle_from(logits)
    positions = agreement(oracle.steps, oracle.tokens, lps)
    assert all(p.top1 for p in positions)
    assert all(p.kl == pytest.approx(0.0, abs=1e-9) for p in positions)


@settings(max_examples=50, deadline=None)
@given(st.lists(rows, min_size=1, max_size=6).filter(lambda r: len({len(x) for x in r}) == 1))
def test_topk_equal_sequences_always_pass(logits: list[list[float]]) -> None:
    oracle, _ = oracle_from(logits)
    verdict = check(oracle, oracle.tokens, None, 5)
    assert verdict.passed
    assert verdict.position is None


@settings(max_examples=50, deadline=None)
@given(rows, rows)
def test_bucket_kl_is_non_negative(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    p = log_softmax(np.array(a[:n]))
    q = log_softmax(np.array(b[:n]))
    step = top_k(p, min(5, n))
    assert bucket_kl(step, q) >= 0.0


def test_topk_rule_at_the_first_divergence() -> None:
    step = ORACLE.steps[5]
    runner_up = step.ids[1]
    flipped = (*ORACLE.tokens[:5], runner_up, *ORACLE.tokens[6:])
    near = check(ORACLE, flipped, (runner_up, ORACLE.tokens[5], 7, 8, 9), 5)
    assert near.passed
    assert (near.position, near.oracle_rank_of_runtime, near.runtime_rank_of_oracle) == (5, 2, 2)
    # the runtime's own top-k lacks the oracle's token: falsified
    assert not check(ORACLE, flipped, (runner_up, 1, 2, 3, 4), 5).passed
    # a token outside the oracle's top-5 is falsified whatever the runtime thinks
    outsider = step.ids[7]
    far = (*ORACLE.tokens[:5], outsider, *ORACLE.tokens[6:])
    verdict = check(ORACLE, far, (outsider, ORACLE.tokens[5], 1, 2, 3), 5)
    assert not verdict.passed
    assert verdict.oracle_rank_of_runtime is None


def test_later_positions_are_not_compared() -> None:
    late = (*ORACLE.tokens[:5], ORACLE.steps[5].ids[1], 0, 0, 0)
    assert check(ORACLE, late, (late[5], ORACLE.tokens[5]), 5).passed


def test_kl_grows_with_a_shifted_distribution() -> None:
    p = log_softmax(np.array([5.0, 4.0, 1.0, 0.0, -1.0, -2.0]))
    step = top_k(p, 3)
    close = log_softmax(np.array([5.0, 3.9, 1.1, 0.0, -1.0, -2.0]))
    far = log_softmax(np.array([0.0, 4.0, 5.0, 0.0, -1.0, -2.0]))
    assert 0 < bucket_kl(step, close) < bucket_kl(step, far)
