"""The qualification score and grade: pure functions of the run's records.

Each test builds the records a run would produce (real cases, real suite results with
the values the suites measure) and checks what the score does with them: a failed gateway
zeroes it, measured values move it (not only pass/fail), a bound met exactly is a B,
skipped tests do not count, crashes count zero, pair tests and timings never count.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_groundtruth.config.qualification import (
    GRADES,
    grade_floor,
    grade_of,
    parse_threshold,
    threshold_for,
    threshold_table,
)
from pytest_groundtruth.report import score, trust
from pytest_groundtruth.report.outcomes import Outcome, Verdict
from pytest_groundtruth.report.records import ParityRecord, SettingsSummary
from pytest_groundtruth.report.score import (
    AT_BOUND,
    below_minimum,
    headroom,
    qualify,
    quality,
    weights,
)
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.quality import q_agreement
from pytest_groundtruth.suites.result import SuiteResult
from pytest_groundtruth.suites.spec import get_suite


@pytest.fixture(autouse=True)
def every_suite_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the formula: no falsification facts (tests/unit/test_trust.py
    has those), whatever data/trust.json says."""
    monkeypatch.setattr(score, "default_trust", trust.Trust)


def record(suite: str, passed: bool = True, measured: Any = 0, bound: Any = 3,
           quant: str = "int8", prompt: str | None = "code", verdict: Verdict | None = None,
           details: dict[str, Any] | None = None, other: str | None = None,
           first: int | None = None, min_grade: str = "", variant: str = "",
           result: bool = True) -> ParityRecord:
    case = Case(suite, "m", "rt", quant, prompt, other, variant)
    found = SuiteResult(case, passed, "summary", measured, bound, first_divergence=first,
                        details=details or {}) if result else None
    return ParityRecord(
        name=case.name, nodeid=case.name, case=case, result=found, runtime_version="v",
        reason="", settings=SettingsSummary(("pyproject.toml",), "oracle", "eval.txt",
                                            min_grade),
        outcome=Outcome.PASSED if passed else Outcome.FAILED,
        verdict=verdict or (Verdict.CORROBORATED if passed else Verdict.FALSIFIED))


GATEWAY = record("gateway", prompt=None, measured=4, bound="G1-G4 pass")


@given(bound=st.floats(0.01, 100), share=st.floats(0, 1))
def test_headroom_is_one_at_zero_and_0_8_at_the_bound(bound: float, share: float) -> None:
    assert headroom(0, bound, 3 * bound) == 1.0
    assert headroom(bound, bound, 3 * bound) == pytest.approx(AT_BOUND)
    inside = headroom(share * bound, bound, 3 * bound)
    assert AT_BOUND - 1e-9 <= inside <= 1.0
    beyond = headroom(bound * (1 + 2 * share), bound, 3 * bound)
    assert 0.0 <= beyond <= AT_BOUND + 1e-9
    assert headroom(10 * bound, bound, 3 * bound) == 0.0


def test_grades() -> None:
    assert [grade_of(s) for s in (1000, 950, 949, 900, 850, 800, 799, 700, 699, 0)] == [
        "A+", "A+", "A", "A", "B+", "B", "C", "C", "F", "F"]
    assert [g for g, _ in GRADES] == ["A+", "A", "B+", "B", "C", "F"]
    assert grade_floor("B") == 800
    with pytest.raises(ValueError, match="grade 'Z' is not one of"):
        grade_floor("Z")


def test_a_failed_gateway_zeroes_the_score() -> None:
    good = [record("token"), record("agreement", measured={"top1": 1.0, "kl": 0.0},
                                     bound={"min_top1": 0.9, "max_kl": 0.01}, prompt=None)]
    (q,) = qualify([GATEWAY, *good])
    assert (q.score, q.grade, q.gateway) == (1000, "A+", "passed")
    broken = record("gateway", passed=False, prompt=None, verdict=Verdict.CRASHED)
    (q,) = qualify([broken, *good])
    assert (q.score, q.grade, q.label) == (0, "F", "0 F (gateway)")
    assert q.gateway.startswith("failed: ")


def test_without_a_gateway_there_is_no_score_and_it_says_why() -> None:
    (q,) = qualify([record("token")])
    assert (q.score, q.label) == (None, "n/a (no gateway)")
    skipped = record("gateway", prompt=None, result=False)
    skipped = ParityRecord(**{**skipped.__dict__, "outcome": Outcome.SKIPPED, "verdict": None,
                              "reason": "llama-cpp-python cannot be imported"})
    (q,) = qualify([skipped, record("token")])
    assert q.label == "n/a (skipped)"
    assert q.gateway == "skipped: llama-cpp-python cannot be imported"


def test_measured_values_move_the_score_not_only_pass_fail() -> None:
    scores: list[int] = []
    for mismatches in (0, 1, 3, 10, 32):
        (q,) = qualify([GATEWAY, record("token", passed=mismatches <= 3, measured=mismatches)])
        assert q.score is not None
        scores.append(q.score)
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == 5
    assert scores[2] == 800  # exactly at the bound: a B
    assert scores[-1] == 0


def test_each_suites_quality_from_its_measured_values() -> None:
    # topk: rank 2 of 5 at the first divergence
    topk = record("topk", measured=2, first=4, details={
        "k": 5, "oracle_rank_of_runtime": 2, "runtime_rank_of_oracle": 2})
    assert quality(topk) == pytest.approx(0.95)
    assert quality(record("topk", passed=False, first=0, details={"k": 5})) == 0.0
    # agreement: half the allowed shortfall and KL at the bound
    agreement = record("agreement", measured={"top1": 0.95, "kl": 0.01},
                       bound={"min_top1": 0.9, "max_kl": 0.01}, prompt=None)
    assert quality(agreement) == pytest.approx((0.9 + 0.8) / 2)
    # perplexity: excess over the oracle's against the ceiling's distance from it
    ppl = record("ppl", measured=18.0, bound=20.0, prompt=None,
                 details={"oracle_perplexity": 16.0})
    assert quality(ppl) == pytest.approx(1 - 0.2 * 2 / 4)
    gap = record("ppl", measured=0.25, bound=0.5, prompt=None, variant="gap", quant="int8",
                 other="int4")
    assert quality(gap) == pytest.approx(0.9)
    # canary: exact text, so any mismatch is past its bound
    assert quality(record("canary", passed=False, measured=16, bound="identical text")) == \
        pytest.approx(0.4)
    # integrity: findings
    assert quality(record("integrity", passed=False, measured=2, prompt=None)) == \
        pytest.approx(0.8 * 8 / 10)


def test_crashes_count_zero_skips_do_not_count() -> None:
    crashed = record("token", passed=False, verdict=Verdict.CRASHED, result=False)
    skipped = ParityRecord(**{**record("topk", result=False).__dict__, "verdict": None,
                              "outcome": Outcome.SKIPPED})
    (q,) = qualify([GATEWAY, record("token"), crashed, skipped])
    assert {p.suite: (p.quality, p.tests) for p in q.parts} == {"token": (0.5, 2)}
    assert q.score == 500


def test_pair_tests_and_timings_never_count() -> None:
    drift = record("drift", passed=False, measured=30, other="int4")
    perf = record("perf", passed=False, prompt=None)
    (q,) = qualify([GATEWAY, record("token"), drift, perf])
    assert [p.suite for p in q.parts] == ["token"]
    assert q.score == 1000


def test_a_suite_that_declares_no_weight_counts_by_its_verdict() -> None:
    (q,) = qualify([GATEWAY, record("token"), record("lora", passed=False, measured="x")])
    assert {p.suite: p.quality for p in q.parts} == {"token": 1.0, "lora": 0.0}
    assert q.score == 500  # both weigh the default 10


def test_a_suite_not_installed_here_counts_by_its_verdict() -> None:
    (q,) = qualify([GATEWAY, record("token"), record("elsewhere", passed=False)])
    assert {p.suite: (p.quality, p.weight) for p in q.parts} == {"token": (1.0, 10.0),
                                                                 "elsewhere": (0.0, 10.0)}


def test_the_built_in_suites_declare_their_weights() -> None:
    assert {name: w.weight for name, w in weights().items()} == {
        "canary": 5, "token": 10, "drift": 0, "roundtrip": 5, "ppl": 15, "cuda": 10,
        "topk": 15, "agreement": 30, "integrity": 15}
    assert list(weights()) == sorted(weights(), key=lambda n: get_suite(n).rank)


def test_weights_are_documented() -> None:
    for name, weight in weights().items():
        assert weight.reason, name


def test_below_minimum_names_the_combination_score_and_grade() -> None:
    records = [GATEWAY, record("token", passed=False, measured=10, min_grade="B")]
    (line,) = below_minimum(records)
    assert line.startswith("m/rt/int8 scores 607 (F), below the minimum grade B (800)")
    assert below_minimum([GATEWAY, record("token", min_grade="B")]) == []
    assert below_minimum([GATEWAY, record("token", passed=False, measured=10)]) == []


def test_thresholds() -> None:
    assert threshold_table(50, "min_throughput") == {"*": 50.0}
    table = threshold_table({"llamacpp": 50, "*": 5}, "min_throughput")
    assert threshold_for(table, "llamacpp") == 50.0
    assert threshold_for(table, "torchao") == 5.0
    assert threshold_for({}, "torchao") is None
    assert parse_threshold("llamacpp=2.5", "--gt-x") == ("llamacpp", 2.5)
    assert parse_threshold("7", "--gt-x") == ("*", 7.0)
    for bad in ("0", "-1", "nan", "inf", "x=y"):
        with pytest.raises(ValueError, match="--gt-x"):
            parse_threshold(bad, "--gt-x")
    with pytest.raises(ValueError, match=r"min_throughput\.llamacpp = True must be a number"):
        threshold_table({"llamacpp": True}, "min_throughput")


def test_a_perplexity_within_its_calibrated_ratio_scores_as_headroom_not_zero() -> None:
    """The ppl suite's bound is a mapping (the calibrated ratio and the roster's ceiling):
    a correct int8 perplexity 2 % above the oracle's, against a 6 % ratio, is near 1."""
    r = record("ppl", measured=16.905, bound={"max_ratio": 1.06, "ceiling": 20.0},
               prompt=None, details={"oracle_perplexity": 16.577, "ratio_to_oracle": 1.0198})
    assert quality(r) == pytest.approx(1 - 0.2 * 0.0198 / 0.06)
    worse = record("ppl", passed=False, measured=19.0, bound={"max_ratio": 1.06},
                   prompt=None, details={"ratio_to_oracle": 1.146})
    found = quality(worse)
    assert found is not None
    assert found < AT_BOUND


def test_agreements_text_case_is_scored_by_its_own_bounds() -> None:
    def scored(bound: dict[str, float]) -> float:
        case = Case("agreement", "m", "llamacpp", "int4", variant="text")
        return q_agreement(SuiteResult(case, True, "", measured={"top1": 0.95, "kl": 0.005},
                                       bound=bound))

    assert scored({"text_min_top1": 0.9, "text_max_kl": 0.01}) == \
        scored({"min_top1": 0.9, "max_kl": 0.01})
