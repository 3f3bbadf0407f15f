"""The plugin's session object: everything the hooks delegate to.

Created in ``pytest_configure`` and kept in ``config.stash``. On every process it holds
the settings per ``groundtruth.toml`` and one :class:`Context` each; on the controller
(or a run without xdist) it also collects each parity test's :class:`ParityRecord` from
the reports (a worker puts the record on its report as JSON; pytest-xdist ships it),
and at the end writes the JSON results, the ticket and the baseline.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.config.options import apply_overrides, pytest_values
from pytest_groundtruth.config.settings import Settings, load_settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import EngineFailure, InputError
from pytest_groundtruth.core.usage import show_size
from pytest_groundtruth.plugin import shard
from pytest_groundtruth.plugin.baseline import (
    BaselineEntry,
    BaselineError,
    entry_for,
    kept_entries,
    load_baseline,
    regression,
    write_baseline,
)
from pytest_groundtruth.plugin.items import ParityFailure, ParityItem
from pytest_groundtruth.report import html, outcomes, results_json, ticket
from pytest_groundtruth.report.outcomes import Outcome, Verdict
from pytest_groundtruth.report.records import ParityRecord, Run, SettingsSummary
from pytest_groundtruth.report.score import below_minimum
from pytest_groundtruth.store.entries import trim
from pytest_groundtruth.suites.result import SuiteResult
from pytest_groundtruth.suites.shards import Split
from pytest_groundtruth.suites.spec import get_suite

SESSION_KEY = pytest.StashKey["GroundtruthSession"]()
FIXTURES = "<fixtures>"  # the settings key of the user-facing fixtures (no groundtruth.toml)


def session_of(config: pytest.Config) -> GroundtruthSession:
    return config.stash[SESSION_KEY]


class GroundtruthSession:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings: dict[str, Settings] = {}
        self._contexts: dict[str, Context] = {}
        self.run = Run()
        self.finish_lines: list[str] = []
        self.write_errors: list[str] = []  # outputs that could not be written (by name)
        self.below_grade: list[str] = []  # combinations under their minimum grade
        self._resolved = 0.0  # resolved_since_last's running total
        self.split: Split | None = None  # --gt-shard's split, where this process collected
        if config.option.gt_shard:
            shard.parse(config.option.gt_shard)  # a bad value fails before collection
        workerinput = getattr(config, "workerinput", None)
        self.is_worker = workerinput is not None
        # From xdist's workerinput, not the environment: a pytest started by a test that
        # runs on a worker inherits PYTEST_XDIST_WORKER without being one.
        self.worker_id: str = workerinput.get("workerid", "gw?") if workerinput else "main"
        if workerinput is not None:
            self.refresh_token: str | None = workerinput.get("gt_refresh_token")
        else:
            self.refresh_token = uuid.uuid4().hex if config.option.gt_no_cache else None
        opt = config.option
        self.baseline_path = Path(opt.gt_baseline) if opt.gt_baseline else None
        self.baseline_update = bool(opt.gt_baseline_update)
        if self.baseline_update and self.baseline_path is None:
            raise pytest.UsageError("--gt-baseline-update needs --gt-baseline FILE")
        self.baseline: dict[str, BaselineEntry] = {}
        if self.baseline_path is not None and not self.baseline_update:
            try:
                self.baseline = load_baseline(self.baseline_path)
            except BaselineError as exc:
                raise pytest.UsageError(f"--gt-baseline: {exc}") from None

    # ------------------------------------------------------------------ per process

    def load(self, key: str, files: list[Path]) -> Settings:
        """The settings of ``[tool.groundtruth]`` + ``files`` + the ``--gt-*`` options."""
        settings = apply_overrides(load_settings(self.config.rootpath, files),
                                   pytest_values(self.config))
        self.settings[key] = settings
        return settings

    @property
    def contexts(self) -> dict[str, Context]:
        """The contexts this process opened (one per ``groundtruth.toml`` and fixtures)."""
        return self._contexts

    def context(self, key: str) -> Context:
        if key not in self._contexts:
            # The parity matrix holds one model at a time: its cases come artifact by
            # artifact (and one xdist group per artifact), so a second open runner would
            # only add memory. The fixtures keep two (a user's test may compare two).
            self._contexts[key] = Context.open(self.settings[key],
                                               refresh_token=self.refresh_token,
                                               max_open_runners=2 if key == FIXTURES else 1)
        return self._contexts[key]

    def resolved_since_last(self) -> float:
        """Seconds this process spent resolving models since the last call."""
        total = sum(c.engines.resolve_seconds for c in self._contexts.values())
        since, self._resolved = total - self._resolved, total
        return round(since, 3)

    def baseline_mark(self, item: ParityItem) -> None:
        """Known falsifications become strict xfails that only a parity verdict satisfies."""
        entry = self.baseline.get(item.name)
        if entry is not None:
            reason = f"known falsification (baseline {self.baseline_path}: measured {entry})"
            if entry.worse is None:
                reason += "; values not compared: rewrite with --gt-baseline-update"
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True, raises=ParityFailure))

    def regression(self, name: str, result: SuiteResult) -> str | None:
        """Why a listed test's failure is worse than its baseline entry, or None."""
        entry = self.baseline.get(name)
        if entry is None:
            return None
        found = regression(entry, result.measured)
        return f"{found} (baseline {self.baseline_path})" if found else None

    def close(self) -> None:
        for ctx in self._contexts.values():
            ctx.close()

    # ------------------------------------------------------------------ controller

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = getattr(report, "gt_plain_nodeid", None) or report.nodeid
        durations = self.run.durations
        own = max(0.0, report.duration - float(getattr(report, "gt_resolve_seconds", 0.0)))
        durations[nodeid] = round(durations.get(nodeid, 0.0) + own, 3)
        data = getattr(report, "groundtruth", None)
        final = report.when == "call" or (report.when == "setup" and not report.passed)
        if data is None or not final:
            return
        outcome = outcome_of(report)
        if outcome is None:
            return
        record = ParityRecord.from_json(data)
        self.run.records.append(record.__class__(
            **{**record.__dict__, "outcome": outcome, "duration": round(report.duration, 3)}))

    def finish(self) -> None:
        """Write the requested files, each on its own: one that cannot be written is
        reported by name (``write_errors``) and the others are still written. Keep lines
        for the terminal summary."""
        lines: list[str] = []
        self.write_errors = []
        opt = self.config.option
        records = self.run.records

        def output(label: str, path: Path, write: Callable[[], str]) -> None:
            try:
                lines.append(write())
            except (OSError, InputError) as exc:
                error = f"groundtruth {label}: could not write {path}: {exc}"
                self.write_errors.append(error)
                lines.append(f"ERROR {error}")

        if opt.gt_results:
            results_path = Path(opt.gt_results)

            def write_results() -> str:
                results_json.write(results_path, self.run)
                return f"groundtruth results: {results_path}"

            output("results", results_path, write_results)
        if opt.gt_ticket:
            ticket_path = Path(opt.gt_ticket)

            def write_ticket() -> str:
                if ticket.write(ticket_path, records):
                    return f"groundtruth ticket: {ticket_path}"
                return "groundtruth ticket: no parity failures, nothing written"

            output("ticket", ticket_path, write_ticket)
        if self.baseline_update and self.baseline_path is not None:
            baseline_path = self.baseline_path
            ran = {r.name for r in records}
            entries = {name: entry for name, entry in kept_entries(baseline_path).items()
                       if name not in ran}  # tests this run did not run keep their entry
            entries.update({
                r.name: entry_for(r.result.measured, get_suite(r.case.suite).worse)
                for r in records
                if r.outcome in (Outcome.FAILED, Outcome.XFAILED) and r.result is not None
                and not r.result.passed
            })

            def write_entries() -> str:
                write_baseline(baseline_path, entries)
                return (f"groundtruth baseline: {len(entries)} known falsification(s) written "
                        f"to {baseline_path}")

            output("baseline", baseline_path, write_entries)
        lines.extend(self.qualify())
        lines.extend(self.trim_caches())
        self.finish_lines = lines

    def trim_caches(self) -> list[str]:
        """Trim each cache with a ``cache_max_size`` to it, least recently used first (the
        controller only, once the workers are done; this session's own lease protects
        nothing now, another live session's does)."""
        limits: dict[Path, int] = {}
        for settings in self.settings.values():
            if settings.cache_max_size is not None:
                root = settings.cache_root()
                limits[root] = min(limits.get(root, settings.cache_max_size),
                                   settings.cache_max_size)
        lines = []
        for root, limit in limits.items():
            try:
                done = trim(root, limit, ignore_pid=os.getpid())
            except OSError as exc:
                lines.append(f"groundtruth cache: could not trim {root} to {show_size(limit)}"
                             f" (cache_max_size): {exc}")
                continue
            if done.removed or done.in_use:
                kept = f"; {len(done.in_use)} in use by a running session kept" \
                    if done.in_use else ""
                lines.append(f"groundtruth cache: {len(done.removed)} least recently used "
                             f"entries removed from {root}, {show_size(done.before)} -> "
                             f"{show_size(done.after)} (cache_max_size {show_size(limit)})"
                             f"{kept}")
        return lines

    def qualify(self) -> list[str]:
        """Lines for each combination below its minimum grade (``min_grade``,
        ``--gt-min-grade``); any such line fails the run."""
        self.below_grade = below_minimum(self.run.records)
        return [f"groundtruth: {line}" for line in self.below_grade]


def verdict_of(report: pytest.TestReport, call: pytest.CallInfo[None]) -> Verdict | None:
    """What the engine did, or None when the test did not run."""
    if report.skipped and not hasattr(report, "wasxfail"):
        return None
    if call.excinfo is None:
        return Verdict.CORROBORATED  # passed (or a baseline entry that passed: XPASS)
    exc = call.excinfo.value
    if isinstance(exc, ParityFailure):
        return outcomes.of_fault(exc.result.fault)
    return outcomes.of_exception(exc)


def outcome_of(report: pytest.TestReport) -> Outcome | None:
    """pytest's status of a parity test; None for another plugin's own (pytest-rerunfailures'
    ``rerun``: an attempt, whose final report comes later)."""
    if hasattr(report, "wasxfail"):
        return Outcome.XFAILED if report.skipped else Outcome.XPASSED
    if report.failed and str(report.longrepr).startswith("[XPASS(strict)]"):
        return Outcome.XPASSED
    try:
        return Outcome(report.outcome)
    except ValueError:
        return None


def attach(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    """Put the test's record and HTML extra on the report (runs where the test ran)."""
    if not isinstance(item, ParityItem):
        return
    if not (report.when == "call" or not report.passed):
        return
    session = session_of(item.config)
    if (
        session.baseline_update
        and report.failed
        and call.excinfo is not None
        and isinstance(call.excinfo.value, ParityFailure)
    ):
        # An update run records every parity failure as known instead of failing on it
        # (engine faults and errors still fail).
        report.outcome = "skipped"
        report.wasxfail = f"recorded in the baseline {session.baseline_path}"
    reason, failure = "", ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed and call.excinfo is not None:
        exc = call.excinfo.value
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, EngineFailure):
            failure = exc.kind.value
    verdict = verdict_of(report, call)
    if verdict is not None and report.when in ("setup", "call"):  # JUnit reads teardown's
        # the value: xdist's execnet sends the report's properties, built-in types only
        item.user_properties.append(("groundtruth_outcome", verdict.value))
    settings = item.settings
    record = ParityRecord(
        name=item.name, nodeid=item.plain_nodeid, case=item.case, result=item.result,
        runtime_version=item.runtime_version, reason=reason, failure=failure,
        settings=SettingsSummary(settings.sources, str(settings.path(settings.oracle_dir)),
                                 str(settings.path(settings.eval_text)),
                                 settings.min_grade or ""),
        verdict=verdict,
    )
    report.groundtruth = record.to_json(transport=True)  # type: ignore[attr-defined]
    if item.result is not None:
        extra: Any = html.extra_for(item.result, verdict, item.views)
        report.extras = [*getattr(report, "extras", []), extra]  # type: ignore[attr-defined]
