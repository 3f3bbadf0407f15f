"""Collection: a ``groundtruth.toml`` file becomes the parity matrix's test items.

Put a ``groundtruth.toml`` in a test directory (it may be empty): its tests are the
matrix configured by ``[tool.groundtruth]`` in pyproject.toml with that file's keys
layered on top (bounds, models, ...). Each case is a :class:`ParityItem` named
``<suite>[<model>-<runtime>-<quant>-<prompt>]`` carrying the suite's marker, so
``-m canary`` and ``-k llamacpp`` select as usual, and an ``xdist_group`` marker per
artifact (model, runtime, quantization), so that under ``--dist loadgroup`` one worker
converts, loads and runs each artifact. Nothing is loaded at collection.

Distribution: with pytest-xdist, ``pytest -n N`` without ``--dist`` distributes as
``loadgroup`` (:func:`prefer_loadgroup`); xdist's own default, ``load``, ignores the
groups and lets every worker load every model. An explicit ``--dist`` (``--dist load``
to opt out, also from ``addopts``) is kept.

xdist's loadgroup schedules by an ``@<group>`` suffix on the node ids its workers
report, which xdist 3.8 writes into ``item._nodeid``; pytest 9.2 computes node ids from
``item._id`` and ignores that, so with pytest 9 ``--dist loadgroup`` silently schedules
like ``load``. Parity items therefore carry the suffix themselves on a loadgroup worker
(the ``nodeid`` pytest's node constructor takes). The controller shows their reports
under the plain id (``ParityItem.plain_nodeid``, carried on the report), so the
terminal, junit names, the ticket's reproduction commands and ``--lf`` see the usual ids.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_groundtruth.config.prompts import PromptError, load_prompts
from pytest_groundtruth.config.settings import ConfigError
from pytest_groundtruth.core.plugins import PluginError
from pytest_groundtruth.plugin.items import ParityItem
from pytest_groundtruth.plugin.session import session_of
from pytest_groundtruth.suites.matrix import build_cases, unoffered

CONFIG_FILE = "groundtruth.toml"


class GroundtruthWarning(UserWarning):
    """A configuration that runs, but not as written (a quantization nobody offers)."""


def scheduled_by_group(config: pytest.Config) -> bool:
    """Whether this is an xdist worker of a ``loadgroup`` run. Workers parse the original
    command line again, so the controller's mode travels in ``workerinput``
    (``XdistHooks``); xdist's own ``option.loadgroup`` covers an explicit ``--dist``."""
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return (workerinput.get("gt_dist") == "loadgroup"
            or bool(getattr(config.option, "loadgroup", False)))


def prefer_loadgroup(option: Any) -> bool:
    """Make ``loadgroup`` the distribution mode when xdist is about to distribute with its
    implicit default. Runs before xdist's ``pytest_cmdline_main``, which turns the unset
    mode ``"no"`` into ``"load"``; an explicit ``--dist`` is left alone. Returns whether
    the mode was changed."""
    workers = getattr(option, "numprocesses", None)
    if getattr(option, "dist", None) == "no" and workers and not getattr(option, "distload",
                                                                              False):
        option.dist = "loadgroup"
        return True
    return False


class GroundtruthFile(pytest.File):
    def collect(self) -> Iterator[ParityItem]:
        session = session_of(self.config)
        key = str(self.path)
        settings = session.load(key, [self.path])
        names = list(settings.prompts) if settings.prompts else None
        prompts = load_prompts(settings.path(settings.prompts_dir), names)
        chat = [p.name for p in prompts if p.is_chat]
        loadgroup = scheduled_by_group(self.config)
        cases = build_cases(settings, [p.name for p in prompts], chat)
        for sentence in unoffered(settings):
            warnings.warn(GroundtruthWarning(f"{self.path}: {sentence}"), stacklevel=1)
        for case in cases:
            scheduled = {"nodeid": f"{self.nodeid}::{case.name}@{case.group}"} if loadgroup else {}
            item = ParityItem.from_parent(self, name=case.name, case=case, settings=settings,
                                          context=lambda: session.context(key), **scheduled)
            item.add_marker(case.suite)
            item.add_marker(pytest.mark.xdist_group(case.group))
            if case.skip:
                item.add_marker(pytest.mark.skip(reason=case.skip))
            session.baseline_mark(item)
            yield item

    def repr_failure(  # type: ignore[override]  # pytest's Collector takes no style
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> Any:
        if isinstance(excinfo.value, (ConfigError, PromptError, PluginError)):
            return f"{self.path}: {excinfo.value}"
        return super().repr_failure(excinfo)
