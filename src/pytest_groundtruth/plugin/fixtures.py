"""Fixtures for writing your own parity tests: models, oracles, runtimes and runners.

They share the plugin's caches and the ``[tool.groundtruth]`` configuration (with the
``--gt-*`` overrides). Each returns a factory, so the test chooses what to load; an
unavailable model or runtime skips the test with the reason and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_groundtruth.config.settings import Settings
    from pytest_groundtruth.models.sources import ResolvedModel
    from pytest_groundtruth.oracle.format import Oracle
    from pytest_groundtruth.runtimes.base import Runner, Runtime
    from pytest_groundtruth.suites.context import Workbench

FIXTURE_KEY = "<fixtures>"


@pytest.fixture(scope="session")
def gt_settings(pytestconfig: pytest.Config) -> Settings:
    """The effective configuration: ``[tool.groundtruth]`` plus ``--gt-*`` options.

    Example::

        def test_roster(gt_settings):
            assert "smollm2-135m" in gt_settings.models
    """
    from pytest_groundtruth.config.options import apply_overrides
    from pytest_groundtruth.config.settings import load_settings
    from pytest_groundtruth.plugin.session import state_of

    settings = apply_overrides(load_settings(pytestconfig.rootpath), pytestconfig)
    state_of(pytestconfig).register_settings(FIXTURE_KEY, settings)
    return settings


@pytest.fixture(scope="session")
def gt_workbench(pytestconfig: pytest.Config, gt_settings: Settings) -> Workbench:
    """The per-process workbench (caches, open runners) behind the other fixtures.

    Example::

        def test_cached(gt_workbench):
            gen, artifact = gt_workbench.generate("smollm2-135m", "llamacpp", "int8", "code")
    """
    from pytest_groundtruth.plugin.session import state_of

    return state_of(pytestconfig).workbench(FIXTURE_KEY)


def _skip_unavailable(exc: Exception) -> None:
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def gt_model(gt_workbench: Workbench) -> Callable[[str], ResolvedModel]:
    """Resolve a roster model to its float32 directory; skips when it is not available.

    Example::

        def test_shape(gt_model):
            model = gt_model("smollm2-135m")
            assert (model.path / "config.json").is_file()
    """
    from pytest_groundtruth.models.sources import ModelUnavailable

    def get(slug: str) -> ResolvedModel:
        try:
            return gt_workbench.model(slug)
        except ModelUnavailable as exc:
            _skip_unavailable(exc)
            raise  # unreachable: pytest.skip raises

    return get


@pytest.fixture(scope="session")
def gt_oracle(gt_workbench: Workbench) -> Callable[[str, str], Oracle]:
    """Load and validate an oracle file.

    Example::

        def test_oracle(gt_oracle):
            oracle = gt_oracle("smollm2-135m", "completion")
            assert oracle.tokens[:2] == (7042, 30)
    """
    return gt_workbench.oracle


@pytest.fixture(scope="session")
def gt_runtime(gt_workbench: Workbench) -> Callable[[str], Runtime]:
    """A runtime by name (``transformers``, ``llamacpp``, ``torchao``, ``apr``); skips when
    it cannot run here (for ``apr``: the binary is not on PATH).

    Example::

        def test_apr_version(gt_runtime):
            assert gt_runtime("apr").version()
    """
    from pytest_groundtruth.core.failures import RuntimeUnavailable

    def get(name: str) -> Runtime:
        try:
            return gt_workbench.runtime(name)
        except RuntimeUnavailable as exc:
            _skip_unavailable(exc)
            raise

    return get


@pytest.fixture(scope="session")
def gt_runner(gt_workbench: Workbench) -> Callable[..., Runner]:
    """An open runner for a model at a quantization (converted once, cached, kept open).

    Example::

        def test_paris(gt_runner):
            runner = gt_runner("llamacpp", "int8", model="smollm2-135m")
            assert "Paris" in runner.generate("The capital of France is", 8).text
    """
    from pytest_groundtruth.core.failures import RuntimeUnavailable
    from pytest_groundtruth.models.sources import ModelUnavailable

    def get(runtime: str, quant: str, model: str = "smollm2-135m") -> Runner:
        try:
            return gt_workbench.runner(gt_workbench.artifact(model, runtime, quant))
        except (ModelUnavailable, RuntimeUnavailable) as exc:
            _skip_unavailable(exc)
            raise

    return get


@pytest.fixture(scope="session")
def apr_runner(gt_runner: Callable[..., Runner]) -> Callable[..., Runner]:
    """The ``apr`` CLI as a runner (skips where ``apr`` is not installed).

    Example::

        def test_apr(apr_runner):
            gen = apr_runner("int8", model="smollm2-135m").generate("Hello, my name is", 32)
    """

    def get(quant: str, model: str = "smollm2-135m") -> Runner:
        return gt_runner("apr", quant, model=model)

    return get
