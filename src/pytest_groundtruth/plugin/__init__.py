"""pytest-groundtruth's pytest plugin: thin hooks that hand off to the session object.

Loaded through the ``pytest11`` entry point. Importing it imports neither torch,
transformers nor any engine: they load when a parity test first runs.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.config.options import add_pytest_options
from pytest_groundtruth.config.settings import ConfigError, load_settings
from pytest_groundtruth.plugin import shard
from pytest_groundtruth.plugin.collection import CONFIG_FILE, GroundtruthFile, prefer_loadgroup
from pytest_groundtruth.plugin.fixtures import (  # noqa: F401 - fixtures are found by name here
    apr_runner,
    gt_context,
    gt_model,
    gt_oracle,
    gt_runner,
    gt_runtime,
    gt_settings,
)
from pytest_groundtruth.plugin.items import BaselineRegression, ParityFailure, ParityItem
from pytest_groundtruth.plugin.rootdir import check_rootdir
from pytest_groundtruth.plugin.session import SESSION_KEY, GroundtruthSession, attach, session_of
from pytest_groundtruth.plugin.stats import PhaseMeter, phase_meter, write_process_stats
from pytest_groundtruth.plugin.workers import (
    WorkerCrashes,
    crashed,
    failed_exit,
    prefer_no_restart,
    summary_lines,
)
from pytest_groundtruth.report import grid, html
from pytest_groundtruth.report.outcomes import Outcome
from pytest_groundtruth.report.records import ParityRecord
from pytest_groundtruth.suites.spec import get_suite, suite_names

METER_KEY = pytest.StashKey[PhaseMeter | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_pytest_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    check_rootdir(config)
    for name in suite_names():
        config.addinivalue_line("markers", f"{name}: pytest-groundtruth suite: "
                                f"{get_suite(name).summary}")
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist --dist loadgroup group")
    session = GroundtruthSession(config)
    config.stash[SESSION_KEY] = session
    config.stash[METER_KEY] = phase_meter()  # each test's peak memory, for groundtruth bench
    config.pluginmanager.register(session, "groundtruth-session")  # receives the reports
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "groundtruth-xdist")
        if not session.is_worker:
            config.pluginmanager.register(PlainNodeIds(), "groundtruth-plain-ids")
            config.pluginmanager.register(WorkerCrashes(config), "groundtruth-worker-crashes")
    if config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(HtmlHooks(), "groundtruth-html")


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    """``pytest -n N`` distributes as ``loadgroup`` unless ``--dist`` says otherwise (a
    wrapper: it must act before xdist's own ``tryfirst`` implementation)."""
    prefer_loadgroup(config.option)
    prefer_no_restart(config.option)
    return (yield)


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        session = session_of(config)
        write_process_stats(session.contexts.values(), session.worker_id,
                            config.stash.get(METER_KEY, None))
        session.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    opt = config.option
    cache: Path | None = None  # None: a bad configuration, reported at collection
    url: str | None = None
    try:
        settings = load_settings(config.rootpath)
        cache, url = settings.cache_root(), settings.cache_url
    except ConfigError:
        pass
    line = f"groundtruth: cache {opt.gt_cache_dir or cache}"
    if opt.gt_cache_url or url:
        line += f", shared {opt.gt_cache_url or url}"
    if opt.gt_no_cache:
        line += ", cache bypassed (--gt-no-cache)"
    if opt.gt_baseline:
        line += f", baseline {opt.gt_baseline}"
    if opt.gt_shard:
        line += f", shard {opt.gt_shard}"
        line += (f" by the timings of {opt.gt_shard_timings}" if opt.gt_shard_timings
                 else " by static estimates")
    return [line]


@pytest.hookimpl(trylast=True)  # after -m, -k and the other plugins narrowed the run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session_of(config).split = shard.select(config, items)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == CONFIG_FILE:
        collector: GroundtruthFile = GroundtruthFile.from_parent(parent, path=file_path)
        return collector
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    meter = item.config.stash.get(METER_KEY, None)
    if meter is None:
        return (yield)
    meter.begin()
    try:
        return (yield)
    finally:
        meter.end(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except ParityFailure as exc:  # a known falsification that got worse is a new one
        why = session_of(item.config).regression(item.name, exc.result)
        if why is None:
            raise
        raise BaselineRegression(exc.result, why) from None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Model resolution this phase paid for: left out of the durations shards balance by.
    resolved = session_of(item.config).resolved_since_last()
    report.gt_resolve_seconds = resolved  # type: ignore[attr-defined]
    if isinstance(item, ParityItem) and item.plain_nodeid != item.nodeid:
        # The worker must report the id it scheduled by; the controller shows the plain one.
        report.gt_plain_nodeid = item.plain_nodeid  # type: ignore[attr-defined]
    attach(item, call, report)
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    groundtruth = session_of(session.config)
    if not groundtruth.is_worker:
        session.exitstatus = failed_exit(crashed(session.config), session.exitstatus)
        groundtruth.finish()
        if groundtruth.write_errors and session.exitstatus in (pytest.ExitCode.OK,
                                                               pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.USAGE_ERROR  # a requested output is missing
        if groundtruth.below_grade and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # --gt-min-grade / min_grade
        lines, strict_failure = skip_lines(groundtruth.run.records,
                                           bool(session.config.option.gt_strict_skips))
        groundtruth.finish_lines.extend(lines)
        if strict_failure and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # --gt-strict-skips


def skip_lines(records: list[ParityRecord], strict: bool) -> tuple[list[str], bool]:
    """What the summary says about skips, and whether they fail the run.

    Every parity test skipped is said in one line, but keeps exit status 0 unless
    ``--gt-strict-skips``: ``pytest -m canary`` on a machine without the engine is a
    legitimate all-skip run. ``--gt-strict-skips`` fails the run when any test skipped
    for what this machine lacks (the skips decided at run time); the matrix's declared
    holes (``case.skip``, known at collection) never count.
    """
    lines = []
    missing = [r for r in records if r.outcome is Outcome.SKIPPED and r.case.skip is None]
    if records and all(r.outcome is Outcome.SKIPPED for r in records):
        lines.append(f"groundtruth: every parity test of this run skipped ({len(records)}): "
                     "nothing was checked; the reasons are in the skip summary (-rs)"
                     + ("" if strict else "; --gt-strict-skips makes this fail the run"))
    if strict and missing:
        lines.append(f"ERROR groundtruth: {len(missing)} parity test(s) skipped for something "
                     f"missing here (--gt-strict-skips), e.g. {missing[0].name}: "
                     f"{missing[0].reason}")
    return lines, bool(strict and missing)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    crashes = crashed(config)
    if crashes:
        terminalreporter.section("crashed xdist workers", red=True, bold=True)
        for line in summary_lines(crashes, getattr(config.option, "maxworkerrestart", None)):
            terminalreporter.write_line(line, red=True)
    session = session_of(config)
    lines = grid.render_text(session.run.records)
    if session.split is not None:
        lines.append(f"groundtruth {session.split.summary()}")
    if lines or session.finish_lines:
        terminalreporter.section("groundtruth parity matrix")
        for line in [*lines, *session.finish_lines]:
            terminalreporter.write_line(line, red=line.startswith("ERROR"))


class XdistHooks:
    """Send the controller's cache refresh token and distribution mode to every worker."""

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["gt_refresh_token"] = session_of(node.config).refresh_token
        node.workerinput["gt_dist"] = node.config.option.dist


class PlainNodeIds:
    """On the xdist controller only (workers must keep the id they were scheduled by): a
    parity test's report under its plain node id, without the ``@<group>``, before the
    terminal, junit and --lf see it."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        plain = getattr(report, "gt_plain_nodeid", None)
        if plain:
            report.nodeid = plain


class HtmlHooks:
    """Put the parity matrix at the top of the pytest-html report, and each parity test's
    outcome (Corroborated, Falsified, Timeout, Crashed) in a column of the results table."""

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(1, '<th class="sortable" data-column-type="outcome">Outcome</th>')

    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        data = getattr(report, "groundtruth", None)
        verdict = data.get("verdict") if isinstance(data, dict) else None
        cells.insert(1, f'<td class="col-outcome">{verdict or ""}</td>')

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str],
                                    postfix: list[str], session: pytest.Session) -> None:
        content = html.matrix_html(session_of(session.config).run.records)
        if content:
            prefix.append(content)
