"""The plugin's session object: everything the hooks delegate to.

Created in ``pytest_configure`` and kept in ``config.stash``. On every process it
holds the settings per ``groundtruth.toml`` and one :class:`Workbench` each; on the
controller (or a run without xdist) it also collects each parity test's record from
the reports (pytest-xdist ships the ``groundtruth`` attribute of a report from the
worker), and at the end writes the JSON results, the ticket and the baseline.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_groundtruth.plugin.baseline import format_measured, load_baseline, write_baseline

if TYPE_CHECKING:
    from pytest_groundtruth.config.settings import Settings
    from pytest_groundtruth.plugin.collection import ParityItem
    from pytest_groundtruth.suites.cases import Case
    from pytest_groundtruth.suites.context import Workbench

STATE_KEY = pytest.StashKey["GroundtruthState"]()


def state_of(config: pytest.Config) -> GroundtruthState:
    return config.stash[STATE_KEY]


class GroundtruthState:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings: dict[str, Settings] = {}
        self._benches: dict[str, Workbench] = {}
        self.records: list[dict[str, Any]] = []
        self.finish_lines: list[str] = []
        self.started = dt.datetime.now(dt.timezone.utc)
        workerinput = getattr(config, "workerinput", None)
        self.is_worker = workerinput is not None
        if workerinput is not None:
            self.refresh_token: str | None = workerinput.get("gt_refresh_token")
        else:
            self.refresh_token = uuid.uuid4().hex if config.option.gt_no_cache else None
        self.baseline_path = Path(config.option.gt_baseline) if config.option.gt_baseline else None
        self.baseline_update = bool(config.option.gt_baseline_update)
        if self.baseline_update and self.baseline_path is None:
            raise pytest.UsageError("--gt-baseline-update needs --gt-baseline FILE")
        self.baseline: dict[str, str] = {}
        if self.baseline_path is not None and not self.baseline_update:
            self.baseline = load_baseline(self.baseline_path)

    # ------------------------------------------------------------------ per process

    def register_settings(self, key: str, settings: Settings) -> None:
        self.settings[key] = settings

    def workbench(self, key: str) -> Workbench:
        if key not in self._benches:
            from pytest_groundtruth.store.cache import default_cache_dir
            from pytest_groundtruth.suites.context import Workbench

            settings = self.settings[key]
            cache = settings.path(settings.cache_dir) if settings.cache_dir else (
                default_cache_dir())
            self._benches[key] = Workbench(settings, cache, self.refresh_token)
        return self._benches[key]

    def runtime_version(self, bench: Workbench, case: Case) -> str:
        device = "cuda" if case.suite == "cuda" else "cpu"
        try:
            return bench.runtime(case.runtime, device).version()
        except Exception as exc:  # a version probe must never fail the test
            return f"unknown ({exc})"

    def baseline_mark(self, item: ParityItem) -> None:
        """Known falsifications become strict xfails that only a parity verdict satisfies."""
        from pytest_groundtruth.plugin.collection import ParityFailure

        measured = self.baseline.get(item.name)
        if measured is not None:
            reason = f"known falsification (baseline {self.baseline_path}: measured {measured})"
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True, raises=ParityFailure))

    def close(self) -> None:
        for bench in self._benches.values():
            bench.close()

    # ------------------------------------------------------------------ controller

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.record(report)

    def record(self, report: pytest.TestReport) -> None:
        data = getattr(report, "groundtruth", None)
        if data is None:
            return
        final = report.when == "call" or (report.when == "setup" and not report.passed)
        if not final:
            return
        self.records.append({**data, "outcome": outcome_of(report),
                             "duration": round(report.duration, 3)})

    def finish(self) -> None:
        """Write the requested files; keep lines for the terminal summary."""
        from pytest_groundtruth.report import results_json, ticket

        lines = []
        opt = self.config.option
        if opt.gt_results:
            path = Path(opt.gt_results)
            results_json.write(path, self)
            lines.append(f"groundtruth results: {path}")
        if opt.gt_ticket:
            path = Path(opt.gt_ticket)
            if ticket.write(path, self):
                lines.append(f"groundtruth ticket: {path}")
            else:
                lines.append("groundtruth ticket: no parity failures, nothing written")
        if self.baseline_update and self.baseline_path is not None:
            entries = {
                r["name"]: format_measured((r.get("result") or {}).get("measured"))
                for r in self.records
                if r["outcome"] in ("failed", "xfailed") and r.get("result")
                and not (r["result"].get("passed"))
            }
            write_baseline(self.baseline_path, entries)
            lines.append(f"groundtruth baseline: {len(entries)} known falsification(s) written "
                         f"to {self.baseline_path}")
        self.finish_lines = lines


def settings_summary(settings: Settings) -> dict[str, Any]:
    """What the controller needs to know about a worker's settings (for reports)."""
    return {
        "sources": list(settings.sources),
        "oracle_dir": str(settings.path(settings.oracle_dir)),
        "eval_text": str(settings.path(settings.eval_text)),
    }


def outcome_of(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.failed and str(report.longrepr).startswith("[XPASS(strict)]"):
        return "xpassed"
    return report.outcome


def attach(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    """Put the case, result and HTML extra on the report (runs on the worker)."""
    from pytest_groundtruth.core.failures import EngineFailure
    from pytest_groundtruth.plugin.collection import ParityFailure, ParityItem
    from pytest_groundtruth.report.html import extra_for

    if not isinstance(item, ParityItem):
        return
    if not (report.when == "call" or not report.passed):
        return
    state = state_of(item.config)
    if (
        state.baseline_update
        and report.failed
        and call.excinfo is not None
        and isinstance(call.excinfo.value, ParityFailure)
    ):
        # An update run records every parity failure as known instead of failing on it
        # (engine faults and errors still fail).
        report.outcome = "skipped"
        report.wasxfail = f"recorded in the baseline {state.baseline_path}"
    case = item.case
    data: dict[str, Any] = {
        "name": item.name,
        "nodeid": item.nodeid,
        "case": {"suite": case.suite, "model": case.model, "runtime": case.runtime,
                 "quant": case.quant_label, "prompt": case.prompt, "id": case.id},
        "result": item.result.to_dict() if item.result is not None else None,
        "runtime_version": item.runtime_version,
        "reason": "",
        "settings": settings_summary(item.settings),
    }
    if report.skipped and isinstance(report.longrepr, tuple):
        data["reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed and call.excinfo is not None:
        exc = call.excinfo.value
        data["reason"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, EngineFailure):
            data["fault"] = exc.kind.value
    report.groundtruth = data  # type: ignore[attr-defined]
    if item.result is not None:
        extra = extra_for(item.result)
        if extra is not None:
            report.extras = [*getattr(report, "extras", []), extra]  # type: ignore[attr-defined]
