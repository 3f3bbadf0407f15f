"""Collection: a ``groundtruth.toml`` file becomes the parity matrix's test items.

Put a ``groundtruth.toml`` in a test directory (it may be empty): its tests are the
matrix configured by ``[tool.groundtruth]`` in pyproject.toml with that file's keys
layered on top (bounds, models, ...). Each case is a :class:`ParityItem` named
``<suite>[<model>-<runtime>-<quant>-<prompt>]`` carrying the suite's marker, so
``-m canary`` and ``-k llamacpp`` select as usual, and an ``xdist_group`` marker per
model and runtime, so ``--dist loadgroup`` loads each model once per worker. Nothing
is loaded at collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pytest_groundtruth.config.prompts import PromptError, load_prompts
from pytest_groundtruth.config.settings import ConfigError
from pytest_groundtruth.core.plugins import PluginError
from pytest_groundtruth.plugin.items import ParityItem
from pytest_groundtruth.plugin.session import session_of
from pytest_groundtruth.suites.matrix import build_cases

CONFIG_FILE = "groundtruth.toml"


class GroundtruthFile(pytest.File):
    def collect(self) -> Iterator[ParityItem]:
        session = session_of(self.config)
        key = str(self.path)
        settings = session.load(key, [self.path])
        names = list(settings.prompts) if settings.prompts else None
        prompts = load_prompts(settings.path(settings.prompts_dir), names)
        chat = [p.name for p in prompts if p.is_chat]
        for case in build_cases(settings, [p.name for p in prompts], chat):
            item = ParityItem.from_parent(self, name=case.name, case=case, settings=settings,
                                          context=lambda: session.context(key))
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
