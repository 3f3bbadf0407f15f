"""A suite's separate checks on one cell are declared on it (``Suite.checks``), each a
parameter of its cases (the case's ``variant``, which stays part of the test id):
``Suite.judge`` runs the one a case names, and no suite's ``run`` dispatches on strings.

Pure: the cases come from the project's own parity configuration (tests/parity), built
as the plugin builds them, without loading a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from pytest_groundtruth.config.prompts import load_prompts
from pytest_groundtruth.config.settings import load_settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.matrix import build_cases
from pytest_groundtruth.suites.result import SuiteResult
from pytest_groundtruth.suites.spec import Suite, get_suite, suite_names

ROOT = Path(__file__).resolve().parents[2]
NO_CONTEXT = cast(Context, None)  # the checks below never read it


def test_judge_runs_the_check_a_case_names_else_run() -> None:
    def run(case: Case, ctx: Context) -> SuiteResult:
        return SuiteResult(case, True, "run")

    def gap(case: Case, ctx: Context) -> SuiteResult:
        return SuiteResult(case, False, "gap")

    suite = Suite("x", "x", run, checks={"gap": gap})
    assert suite.judge(Case("x", "m", "rt", "int8"), NO_CONTEXT).summary == "run"
    assert suite.judge(Case("x", "m", "rt", "int8", variant="gap"), NO_CONTEXT).summary == "gap"
    # a variant that is a parameter, not a check (speculative's draft), goes to run
    assert suite.judge(Case("x", "m", "rt", "int8", variant="draft"),
                       NO_CONTEXT).summary == "run"


def _parity_cases() -> list[Case]:
    settings = load_settings(ROOT, [ROOT / "tests" / "parity" / "groundtruth.toml"])
    prompts = [p.name for p in load_prompts(settings.path(settings.prompts_dir))]
    return build_cases(settings, prompts)


def test_every_variant_of_the_parity_matrix_is_a_declared_check_or_a_draft() -> None:
    settings = load_settings(ROOT, [ROOT / "tests" / "parity" / "groundtruth.toml"])
    cases = _parity_cases()
    by_suite: dict[str, set[str]] = {}
    for case in cases:
        if case.variant:
            by_suite.setdefault(case.suite, set()).add(case.variant)
    drafts = by_suite.pop("speculative")
    assert drafts - set(get_suite("speculative").checks) <= {"self", *settings.roster}
    for suite, variants in by_suite.items():
        assert variants <= set(get_suite(suite).checks), suite
    # the suites that pack several checks declare them all, and their cases use each one
    declared = {name: set(get_suite(name).checks) for name in suite_names()
                if get_suite(name).checks}
    assert declared == {
        "lora": {"merge", "changes", "hot"}, "ppl": {"gap"}, "rescore": {"nll"},
        "cuda": {"pair", "drift"}, "agreement": {"text"}, "speculative": {"lookup"}}
    used = {**by_suite, "speculative": drafts & {"lookup"}}
    assert used == declared
