"""pytest-groundtruth's pytest plugin: thin hooks that hand off to the session object.

Loaded through the ``pytest11`` entry point. Importing it imports neither torch,
transformers nor any engine: they load when a parity test first runs.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.config.options import add_options
from pytest_groundtruth.plugin.collection import CONFIG_FILE, GroundtruthFile
from pytest_groundtruth.plugin.fixtures import (  # noqa: F401 - fixtures are found by name here
    apr_runner,
    gt_model,
    gt_oracle,
    gt_runner,
    gt_runtime,
    gt_settings,
    gt_workbench,
)
from pytest_groundtruth.plugin.session import STATE_KEY, GroundtruthState, attach, state_of
from pytest_groundtruth.suites.catalog import CATALOG


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for name, info in CATALOG.items():
        config.addinivalue_line("markers", f"{name}: pytest-groundtruth suite: {info.summary}")
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist --dist loadgroup group")
    state = GroundtruthState(config)
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(state, "groundtruth-state")  # receives the reports
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "groundtruth-xdist")
    if config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(HtmlHooks(), "groundtruth-html")


def pytest_unconfigure(config: pytest.Config) -> None:
    if STATE_KEY in config.stash:
        state_of(config).close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    from pytest_groundtruth.config.settings import ConfigError, load_settings
    from pytest_groundtruth.store.cache import default_cache_dir

    opt = config.option
    try:
        settings = load_settings(config.rootpath)
        configured = settings.path(settings.cache_dir) if settings.cache_dir else None
    except ConfigError:
        configured = None  # reported with the file and key at collection
    cache = opt.gt_cache_dir or configured or f"{default_cache_dir()} (default)"
    line = f"groundtruth: cache {cache}"
    if opt.gt_no_cache:
        line += ", cache bypassed (--gt-no-cache)"
    if opt.gt_baseline:
        line += f", baseline {opt.gt_baseline}"
    return [line]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == CONFIG_FILE:
        collector: GroundtruthFile = GroundtruthFile.from_parent(parent, path=file_path)
        return collector
    return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach(item, call, report)
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = state_of(session.config)
    if not state.is_worker:
        state.finish()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from pytest_groundtruth.report.grid import render_text

    state = state_of(config)
    lines = render_text(state.records)
    if lines or state.finish_lines:
        terminalreporter.section("groundtruth parity matrix")
        for line in [*lines, *state.finish_lines]:
            terminalreporter.write_line(line)


class XdistHooks:
    """Send the controller's cache refresh token to every worker."""

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["gt_refresh_token"] = state_of(node.config).refresh_token


class HtmlHooks:
    """Put the parity matrix at the top of the pytest-html report."""

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str],
                                    postfix: list[str], session: pytest.Session) -> None:
        from pytest_groundtruth.report.html import matrix_html

        state = state_of(session.config)
        notes: dict[str, None] = {}  # ordered, without repeats
        for record in state.records:
            settings = record["settings"]
            notes[f"configuration: {', '.join(settings['sources'])}"] = None
            notes[f"perplexity text: {settings['eval_text']}"] = None
        content = matrix_html(state.records, list(notes))
        if content:
            prefix.append(content)
