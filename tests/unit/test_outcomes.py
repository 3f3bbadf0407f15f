"""Outcomes and verdicts are enums inside the package and the same strings outside it.

What leaves a process (xdist's execnet, the JSON results, JUnit's property, the ticket)
must carry exactly the strings it carried before the enums: execnet refuses any type that
is not an exact built-in one, so a member that slipped into a report would end the run.
The fast tests check the record's JSON and execnet's serializer directly; the slow one
runs a real project serially and under ``-n 2`` and compares what each wrote.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import execnet
import pytest

from pytest_groundtruth.core.failures import CacheUnusable, EngineFailure, FailureKind
from pytest_groundtruth.plugin.session import outcome_of
from pytest_groundtruth.report import results_json
from pytest_groundtruth.report.grid import CODE, code_of
from pytest_groundtruth.report.outcomes import Outcome, Verdict, of_exception, of_fault
from pytest_groundtruth.report.records import ParityRecord, Run, SettingsSummary
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult

Project = Callable[..., pytest.Pytester]

# The strings every report has shown (JSON results, JUnit, HTML, tickets): fixed.
VERDICTS = ("Corroborated", "Falsified", "Timeout", "Crashed")
OUTCOMES = ("passed", "failed", "skipped", "xfailed", "xpassed")


def record(outcome: Outcome | None, verdict: Verdict | None) -> ParityRecord:
    case = Case("token", "m", "rt", "int8", "code")
    result = SuiteResult(case, verdict is Verdict.CORROBORATED, "summary", 0, 3)
    return ParityRecord(name=case.name, nodeid=f"t.toml::{case.name}", case=case,
                        result=result, runtime_version="v", reason="",
                        settings=SettingsSummary(("pyproject.toml",), "oracle", "eval.txt"),
                        outcome=outcome, verdict=verdict, failure="")


def test_members_are_the_published_strings() -> None:
    assert [m.value for m in Verdict] == list(VERDICTS)
    assert [m.value for m in Outcome] == list(OUTCOMES)
    for member in (*Verdict, *Outcome):
        assert member == member.value
        assert str(member) == f"{member}" == f"{member:>0}" == member.value
        assert json.dumps(member) == json.dumps(member.value)
    assert {o for o in Outcome if o.failed} == {Outcome.FAILED, Outcome.XPASSED}
    assert set(CODE) == set(Verdict)


@pytest.mark.parametrize("outcome", [*Outcome, None])
@pytest.mark.parametrize("verdict", [*Verdict, None])
def test_a_record_crosses_execnet_and_json_with_the_same_values(
        outcome: Outcome | None, verdict: Verdict | None) -> None:
    sent = record(outcome, verdict)
    data = sent.to_json(transport=True)
    # what the worker puts on the report: only exact built-in types, or execnet refuses it
    assert type(data["outcome"]) is str
    assert data["verdict"] is None or type(data["verdict"]) is str
    assert data["outcome"] == (outcome.value if outcome else "")
    assert data["verdict"] == (verdict.value if verdict else None)
    wire = execnet.loads(execnet.dumps(data))
    back = ParityRecord.from_json(json.loads(json.dumps(wire)))
    assert back == sent
    assert back.outcome is outcome
    assert back.verdict is verdict
    assert json.dumps(back.to_json()) == json.dumps(sent.to_json())
    if verdict is not None:
        assert code_of(back) == code_of(sent)


def test_a_member_on_the_wire_would_end_an_xdist_run() -> None:
    """Why ``to_json`` writes values: execnet's serializer refuses a ``str`` subclass."""
    with pytest.raises(execnet.DataFormatError):
        execnet.dumps({"verdict": Verdict.FALSIFIED})


def test_plain_strings_become_members_and_unknown_ones_are_refused() -> None:
    base = record(Outcome.PASSED, Verdict.CORROBORATED)
    rebuilt = ParityRecord(**{**base.__dict__, "outcome": "xfailed", "verdict": ""})
    assert rebuilt.outcome is Outcome.XFAILED
    assert rebuilt.verdict is None
    with pytest.raises(ValueError, match="'Maybe' is not a valid Verdict"):
        ParityRecord(**{**base.__dict__, "verdict": "Maybe"})


def test_results_file_round_trip_keeps_the_strings(tmp_path: Path) -> None:
    run = Run(records=[record(o, v) for o, v in (
        (Outcome.PASSED, Verdict.CORROBORATED), (Outcome.FAILED, Verdict.FALSIFIED),
        (Outcome.XFAILED, Verdict.FALSIFIED), (Outcome.XPASSED, Verdict.CORROBORATED),
        (Outcome.FAILED, Verdict.TIMEOUT), (Outcome.FAILED, Verdict.CRASHED),
        (Outcome.SKIPPED, None), (Outcome.FAILED, None))])
    path = tmp_path / "r.json"
    results_json.write(path, run)
    first = path.read_bytes()
    written = json.loads(first)["results"]
    assert [(r["outcome"], r["verdict"]) for r in written] == [
        ("passed", "Corroborated"), ("failed", "Falsified"), ("xfailed", "Falsified"),
        ("xpassed", "Corroborated"), ("failed", "Timeout"), ("failed", "Crashed"),
        ("skipped", None), ("failed", None)]
    again = tmp_path / "again.json"
    results_json.write(again, results_json.read(path))
    assert again.read_bytes() == first


def test_verdicts_of_faults_and_exceptions() -> None:
    assert of_fault("") is Verdict.FALSIFIED
    assert of_fault(FailureKind.TIMEOUT.value) is Verdict.TIMEOUT
    assert of_fault(FailureKind.NAN.value) is Verdict.FALSIFIED
    assert of_fault(FailureKind.GARBAGE.value) is Verdict.FALSIFIED
    assert of_fault(FailureKind.REFUSED.value) is Verdict.CRASHED
    assert of_fault("something new") is Verdict.CRASHED
    assert of_exception(CacheUnusable("disk full")) is None
    assert of_exception(EngineFailure(FailureKind.TIMEOUT, "slow")) is Verdict.TIMEOUT
    assert of_exception(RuntimeError("bug")) is Verdict.CRASHED


def _report(outcome: str, when: str = "call") -> pytest.TestReport:
    return pytest.TestReport("t.toml::token[x]", ("t.toml", 0, "token[x]"), {},
                             outcome, None, when)  # type: ignore[arg-type]


def test_pytest_statuses_become_outcomes_and_foreign_ones_are_not_recorded() -> None:
    assert outcome_of(_report("passed")) is Outcome.PASSED
    assert outcome_of(_report("failed")) is Outcome.FAILED
    assert outcome_of(_report("skipped")) is Outcome.SKIPPED
    xfailed = _report("skipped")
    xfailed.wasxfail = "known"
    assert outcome_of(xfailed) is Outcome.XFAILED
    # pytest-rerunfailures marks an attempt "rerun"; the final report is the test's
    assert outcome_of(_report("rerun")) is None


# --------------------------------------------------------------------------- xdist, for real

TOOL = ('models = ["tiny-llama"]\nruntimes = ["transformers"]\nnear_ties = "count"\n'
        'quantizations = ["float32", "bfloat16"]\nsuites = ["gateway", "token"]\n'
        'prompts = ["arithmetic", "code", "completion", "greeting"]\n')


def _written(pytester: pytest.Pytester, *args: str) -> tuple[list[dict[str, Any]],
                                                            dict[str, str]]:
    """Run the project; its JSON records (without timings) and JUnit's outcome property."""
    run = pytester.runpytest(*args, "--gt-results", "r.json", "--junitxml", "j.xml")
    run.assert_outcomes(passed=8, failed=2)
    records = []
    for r in json.loads((pytester.path / "r.json").read_text())["results"]:
        r.pop("duration")
        records.append(r)
    props = {case.get("name", ""): prop.get("value", "")
             for case in ET.parse(pytester.path / "j.xml").iter("testcase")
             for prop in case.iter("property") if prop.get("name") == "groundtruth_outcome"}
    return sorted(records, key=lambda r: r["nodeid"]), props


@pytest.mark.slow  # two pytest runs of a real project (conftest marks it too)
def test_results_are_the_same_strings_under_xdist(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    serial, serial_props = _written(pytester, "-n", "0")
    spread, spread_props = _written(pytester, "-n", "2")
    assert spread == serial
    assert spread_props == serial_props
    assert {(r["outcome"], r["verdict"]) for r in spread} == {
        ("passed", "Corroborated"), ("failed", "Falsified")}
    assert set(spread_props.values()) == {"Corroborated", "Falsified"}
