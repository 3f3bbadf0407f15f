"""The score counts trusted verdicts: a suite that failed a correct file at a precision in
the falsification runs informs there but does not lower the score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.lab.falsify import RowResult, trust_facts
from pytest_groundtruth.report import trust
from pytest_groundtruth.report.outcomes import Outcome, Verdict
from pytest_groundtruth.report.records import ParityRecord, SettingsSummary
from pytest_groundtruth.report.score import qualify, quality
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult


def record(suite: str, passed: bool, measured: Any, bound: Any, quant: str = "int8",
           prompt: str | None = "code") -> ParityRecord:
    case = Case(suite, "m", "rt", quant, prompt)
    result = SuiteResult(case, passed, "summary", measured, bound)
    return ParityRecord(
        name=case.name, nodeid=case.name, case=case, result=result, runtime_version="v",
        reason="", settings=SettingsSummary(("pyproject.toml",), "oracle", "eval.txt", ""),
        outcome=Outcome.PASSED if passed else Outcome.FAILED,
        verdict=Verdict.CORROBORATED if passed else Verdict.FALSIFIED)


FACTS = trust.from_alarms({"token": ["int8", "q4_k_m"], "drift": ["int8+int4"],
                           "agreement": []}, ["float32", "int8", "int4"], "a test")
RECORDS = [record("gateway", True, 4, "G1-G4 pass", prompt=None),
           record("agreement", True, {"top1": 1.0, "kl": 0.0},
                  {"min_top1": 0.8, "max_kl": 0.01}, prompt=None),
           record("token", False, 25, 3)]


def test_a_suite_with_false_alarms_at_a_precision_informs_but_does_not_count() -> None:
    untrusted = record("token", False, 25, 3)
    assert quality(untrusted, FACTS) is None
    assert quality(untrusted, trust.Trust()) == pytest.approx(0.8 * (32 - 25) / (32 - 3))
    # int8 and q8_0 are one precision; int4 is another, measured without false alarms
    assert FACTS.informs_only("token", "q8_0")
    assert not FACTS.informs_only("token", "int4")
    assert FACTS.informs_only("drift", "q8_0", "q4_0")
    assert not FACTS.informs_only("agreement", "int8")


def test_a_correct_file_failing_only_untrusted_verdicts_keeps_its_grade() -> None:
    [trusted] = qualify(RECORDS, FACTS)
    [counted] = qualify(RECORDS, trust.Trust())
    assert (trusted.score, trusted.informs) == (1000, ("token",))
    assert counted.score is not None
    assert counted.score < 900
    assert trusted.to_json()["informs"] == ["token"]


def test_a_failed_trusted_verdict_still_lowers_the_score() -> None:
    broken = [*RECORDS[:1], record("agreement", False, {"top1": 0.5, "kl": 0.05},
                                   {"min_top1": 0.8, "max_kl": 0.01}, prompt=None)]
    [q] = qualify(broken, FACTS)
    assert q.score is not None
    assert q.score < 700


def test_trust_facts_round_trip_and_come_from_the_falsification_rows(tmp_path: Path) -> None:
    correct = RowResult("correct conversion", "correct", ("float32", "int8", "int4"))
    correct.caught["token"] = ["q8", "q4"]
    correct.caught["drift"] = ["q8+q4"]
    other = RowResult("llama.cpp Q4_K_M", "correct", ("q4_k_m",))
    broken = RowResult("scale_off", "file", ("int8",))
    broken.caught["agreement"] = ["q8"]  # a catch on a broken file is no false alarm
    facts = trust_facts("m", [correct, other, broken])
    assert dict(facts.false_alarms) == {"token": frozenset({"q8_0", "q4_0"}),
                                        "drift": frozenset({"q8_0+q4_0"})}
    assert facts.measured == frozenset({"float32", "q8_0", "q4_0", "q4_k_m"})
    path = tmp_path / "trust.json"
    path.write_text(facts.to_json())
    assert trust.load(path) == facts
    assert trust.load(tmp_path / "missing.json") == trust.Trust()
    path.write_text('{"schema": "other"}')
    with pytest.raises(ValueError, match="regenerate it with `groundtruth falsify --trust`"):
        trust.load(path)
