"""Collection: a ``groundtruth.toml`` file becomes the parity matrix's test items.

Put a ``groundtruth.toml`` in a test directory (it may be empty): its tests are the
matrix configured by ``[tool.groundtruth]`` in pyproject.toml with that file's keys
layered on top (bounds, models, ...). Each case is a :class:`ParityItem` named
``<suite>[<model>-<runtime>-<quant>-<prompt>]`` carrying the suite's marker, so
``-m canary`` and ``-k llamacpp`` select as usual, and an ``xdist_group`` marker
per model and runtime, so ``--dist loadgroup`` loads each model once per worker.
Nothing is loaded at collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_groundtruth.config.prompts import PromptError, load_prompts
from pytest_groundtruth.config.settings import ConfigError, Settings, load_settings
from pytest_groundtruth.suites.cases import Case, build_cases

if TYPE_CHECKING:
    from pytest_groundtruth.suites.result import SuiteResult

CONFIG_FILE = "groundtruth.toml"


class ParityFailure(AssertionError):
    """A suite's verdict was 'falsified'; carries the result that explains it."""

    def __init__(self, result: SuiteResult) -> None:
        self.result = result
        super().__init__(result.summary)


class GroundtruthFile(pytest.File):
    def collect(self) -> Iterator[ParityItem]:
        from pytest_groundtruth.config.options import apply_overrides
        from pytest_groundtruth.plugin.session import state_of

        state = state_of(self.config)
        settings = apply_overrides(load_settings(self.config.rootpath, [self.path]), self.config)
        prompt_dir = settings.path(settings.prompts_dir)
        names = list(settings.prompts) if settings.prompts else None
        prompts = [p.name for p in load_prompts(prompt_dir, names)]
        state.register_settings(str(self.path), settings)
        for case in build_cases(settings, prompts):
            item = ParityItem.from_parent(self, name=case.name, case=case,
                                          settings_key=str(self.path))
            item.add_marker(case.suite)
            item.add_marker(pytest.mark.xdist_group(case.group))
            if case.skip:
                item.add_marker(pytest.mark.skip(reason=case.skip))
            state.baseline_mark(item)
            yield item

    def repr_failure(  # type: ignore[override]  # pytest's Collector takes no style
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> Any:
        if isinstance(excinfo.value, (ConfigError, PromptError)):
            return f"{self.path}: {excinfo.value}"
        return super().repr_failure(excinfo)


class ParityItem(pytest.Item):
    def __init__(self, *, case: Case, settings_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.settings_key = settings_key
        self.result: SuiteResult | None = None
        self.runtime_version = ""

    @property
    def settings(self) -> Settings:
        from pytest_groundtruth.plugin.session import state_of

        return state_of(self.config).settings[self.settings_key]

    def runtest(self) -> None:
        from pytest_groundtruth.core.failures import RuntimeUnavailable
        from pytest_groundtruth.models.sources import ModelUnavailable
        from pytest_groundtruth.plugin.session import state_of
        from pytest_groundtruth.suites.run import run_case

        bench = state_of(self.config).workbench(self.settings_key)
        device = "cuda" if self.case.suite == "cuda" else "cpu"
        try:
            bench.model(self.case.model)  # unavailable model or engine: skip before anything
            bench.runtime(self.case.runtime, device)
            self.result = run_case(self.case, bench)
        except (ModelUnavailable, RuntimeUnavailable) as exc:
            pytest.skip(str(exc))
        self.runtime_version = state_of(self.config).runtime_version(bench, self.case)
        if not self.result.passed:
            raise ParityFailure(self.result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> Any:
        from pytest_groundtruth.core.failures import EngineFailure
        from pytest_groundtruth.models.sources import ModelError
        from pytest_groundtruth.oracle.format import OracleError

        value = excinfo.value
        if isinstance(value, ParityFailure):
            return value.result.explain()
        if isinstance(value, (EngineFailure, OracleError, ModelError, FileNotFoundError)):
            return f"{self.name}: {type(value).__name__}: {value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name

