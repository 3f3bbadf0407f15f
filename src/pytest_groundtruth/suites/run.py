"""Run one case: dispatch to the suite's module (imported on first use)."""

from __future__ import annotations

import importlib

from pytest_groundtruth.suites.cases import Case
from pytest_groundtruth.suites.context import Workbench
from pytest_groundtruth.suites.result import SuiteResult

MODULES = {
    "canary": "canary",
    "token": "token",
    "drift": "drift",
    "roundtrip": "roundtrip",
    "ppl": "ppl",
    "cuda": "cuda",
    "topk": "topk",
    "agreement": "agreement",
    "integrity": "integrity",
}


def run_case(case: Case, bench: Workbench) -> SuiteResult:
    module = importlib.import_module(f"pytest_groundtruth.suites.{MODULES[case.suite]}")
    result: SuiteResult = module.run(case, bench)
    return result
