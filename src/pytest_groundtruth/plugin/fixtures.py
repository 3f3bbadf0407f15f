"""Fixtures for writing your own parity tests: models, oracles, runtimes and runners.

They share the plugin's caches and the ``[tool.groundtruth]`` configuration (with the
``--gt-*`` overrides). Each returns a factory, so the test chooses what to load; an
unavailable model or runtime skips the test with the reason and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.models.sources import ModelUnavailable, ResolvedModel
from pytest_groundtruth.oracle.format import Oracle
from pytest_groundtruth.plugin.session import FIXTURES, session_of
from pytest_groundtruth.runtimes.base import Runner, Runtime

T = TypeVar("T")


def _or_skip(make: Callable[[], T]) -> T:
    """``make()``, or a skip with the reason when the model or runtime is unavailable."""
    try:
        return make()
    except (ModelUnavailable, RuntimeUnavailable) as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def gt_settings(pytestconfig: pytest.Config) -> Settings:
    """The effective configuration: ``[tool.groundtruth]`` plus ``--gt-*`` options.

    Example::

        def test_roster(gt_settings):
            assert "smollm2-135m" in gt_settings.models
    """
    return session_of(pytestconfig).load(FIXTURES, [])


@pytest.fixture(scope="session")
def gt_context(pytestconfig: pytest.Config, gt_settings: Settings) -> Context:
    """The per-process context (inputs, engines, cached results) behind the other fixtures.

    Example::

        def test_cached(gt_context):
            gen, artifact = gt_context.results.generate("smollm2-135m", "llamacpp", "int8",
                                                        "code")
    """
    return session_of(pytestconfig).context(FIXTURES)


@pytest.fixture(scope="session")
def gt_model(gt_context: Context) -> Callable[[str], ResolvedModel]:
    """Resolve a roster model to its float32 directory; skips when it is not available.

    Example::

        def test_shape(gt_model):
            model = gt_model("smollm2-135m")
            assert (model.path / "config.json").is_file()
    """
    return lambda slug: _or_skip(lambda: gt_context.engines.model(slug))


@pytest.fixture(scope="session")
def gt_oracle(gt_context: Context) -> Callable[[str, str], Oracle]:
    """Load and validate an oracle file.

    Example::

        def test_oracle(gt_oracle):
            oracle = gt_oracle("smollm2-135m", "completion")
            assert oracle.tokens[:2] == (7042, 30)
    """
    return lambda slug, prompt: gt_context.inputs.oracle(slug, prompt)


@pytest.fixture(scope="session")
def gt_runtime(gt_context: Context) -> Callable[[str], Runtime]:
    """A runtime by name (``transformers``, ``llamacpp``, ``torchao``, ``apr``, or one you
    configured); skips when it cannot run here (for ``apr``: the binary is not on PATH).

    Example::

        def test_apr_version(gt_runtime):
            assert gt_runtime("apr").version()
    """
    return lambda name: _or_skip(lambda: gt_context.engines.runtime(name))


@pytest.fixture(scope="session")
def gt_runner(gt_context: Context) -> Callable[..., Runner]:
    """An open runner for a model at a quantization (converted once, cached, kept open).

    Example::

        def test_paris(gt_runner):
            runner = gt_runner("llamacpp", "int8", model="smollm2-135m")
            assert "Paris" in runner.generate("The capital of France is", 8).text
    """
    engines = gt_context.engines

    def get(runtime: str, quant: str, model: str = "smollm2-135m") -> Runner:
        return _or_skip(lambda: engines.runner(engines.artifact(model, runtime, quant)))

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
