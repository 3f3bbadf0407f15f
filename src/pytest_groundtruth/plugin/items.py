"""A parity test as a pytest item: run one case's suite, turn its verdict into an outcome.

An unavailable model or runtime, or an oracle that lacks what the suite needs (a file in
the original workflow's format has no top-k), skips with the reason and the fix; a
falsified verdict raises :class:`ParityFailure`, whose report is the result's own
explanation; an engine failure, a corrupt oracle or a missing file is a short, named
error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.context.results import ChatPromptMismatch
from pytest_groundtruth.core.failures import (
    CacheUnusable,
    EngineFailure,
    InputError,
    RuntimeUnavailable,
)
from pytest_groundtruth.models.sources import ModelUnavailable
from pytest_groundtruth.oracle.format import OracleIncomplete
from pytest_groundtruth.report.sidebyside import SideBySide, views_for
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult
from pytest_groundtruth.suites.spec import get_suite


class ParityFailure(AssertionError):
    """A suite's verdict was 'falsified'; carries the result that explains it."""

    def __init__(self, result: SuiteResult) -> None:
        self.result = result
        super().__init__(result.summary)


class BaselineRegression(AssertionError):
    """A known falsification got worse than its baseline entry (not excused by the xfail)."""

    def __init__(self, result: SuiteResult, why: str) -> None:
        self.result = result
        self.why = why
        super().__init__(f"{why}: {result.summary}")


def runtime_version(ctx: Context, case: Case) -> str:
    """The engine's version as it reports itself (never fails the test)."""
    try:
        return ctx.engines.runtime(case.runtime, case.device).version()
    except Exception as exc:  # a version probe must never fail the test
        return f"unknown ({exc})"


def report_views(ctx: Context, case: Case) -> tuple[SideBySide, ...]:
    """The side-by-side views for the report, from what the test generated (never fails
    the test: a view that cannot be built is left out)."""
    try:
        return views_for(ctx, case)
    except Exception:  # a report extra must never change a verdict
        return ()


class ParityItem(pytest.Item):
    def __init__(self, *, case: Case, settings: Settings, context: Callable[[], Context],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.settings = settings
        self.context = context
        self.result: SuiteResult | None = None
        self.runtime_version = ""
        self.views: tuple[SideBySide, ...] = ()  # for the HTML report's view and chart

    def runtest(self) -> None:
        ctx = self.context()
        case = self.case
        try:
            ctx.engines.model(case.model)  # unavailable model or engine: skip before anything
            ctx.engines.runtime(case.runtime, case.device)
            self.result = get_suite(case.suite).judge(case, ctx)
        except (ModelUnavailable, RuntimeUnavailable, OracleIncomplete) as exc:
            pytest.skip(str(exc))
        self.runtime_version = runtime_version(ctx, case)
        self.views = report_views(ctx, case)
        if not self.result.passed:
            raise ParityFailure(self.result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> Any:
        value = excinfo.value
        if isinstance(value, ParityFailure):
            return value.result.explain()
        if isinstance(value, BaselineRegression):
            return f"{self.name}: {value.why}\n{value.result.explain()}"
        if isinstance(value, ChatPromptMismatch):
            return f"{self.name}: {value}"
        if isinstance(value, (EngineFailure, InputError, FileNotFoundError, CacheUnusable)):
            return f"{self.name}: {type(value).__name__}: {value}"
        return super().repr_failure(excinfo, style)

    @property
    def plain_nodeid(self) -> str:
        """The node id without the ``@<group>`` that pytest-xdist's loadgroup schedules by
        (ours, and with pytest 8 also xdist's own)."""
        nodeid, suffix = self.nodeid, f"@{self.case.group}"
        while nodeid.endswith(suffix):
            nodeid = nodeid.removesuffix(suffix)
        return nodeid

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name
