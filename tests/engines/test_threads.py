"""Engine threads: the CPUs shared out among pytest-xdist workers, a user's setting wins."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_groundtruth.config.settings import ConfigError, Settings
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.hf import TransformersRunner, TransformersRuntime
from pytest_groundtruth.runtimes.threads import default_threads, torch_threads


@pytest.fixture
def sixteen_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("sixteen_cpus")
@pytest.mark.parametrize(("workers", "expected"), [("", 8), ("2", 8), ("4", 4), ("32", 1)])
def test_torch_follows_the_llama_cpp_rule(monkeypatch: pytest.MonkeyPatch, workers: str,
                                          expected: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", workers)
    assert torch_threads() == default_threads() == expected


@pytest.mark.usefixtures("sixteen_cpus")
def test_a_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert torch_threads(explicit=3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert torch_threads() is None  # torch already follows OMP_NUM_THREADS: left alone
    assert torch_threads(explicit=2) == 2


def test_n_threads_is_a_transformers_runtime_option() -> None:
    settings = Settings(Path())
    runtime = TransformersRuntime.from_config("transformers", {"n_threads": 3}, settings)
    assert isinstance(runtime, TransformersRuntime)
    assert runtime.n_threads == 3
    with pytest.raises(ConfigError, match="option 'n_threads' = 'x' has the wrong type"):
        TransformersRuntime.from_config("transformers", {"n_threads": "x"}, settings)


@pytest.mark.slow
@pytest.mark.usefixtures("sixteen_cpus", "restore_torch_threads")
def test_an_open_runner_sets_torchs_threads(monkeypatch: pytest.MonkeyPatch,
                                            tiny: Callable[[str], ResolvedModel]) -> None:
    import torch

    model = tiny("llama")
    artifact = Artifact("transformers", model.slug, "float32", model.path, "k", "r")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "8")
    runner = TransformersRunner(artifact)
    assert runner.n_threads == torch.get_num_threads() == 2
    runner.close()
    runner = TransformersRunner(artifact, n_threads=1)
    assert torch.get_num_threads() == 1
    runner.close()
    torch.set_num_threads(3)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    runner = TransformersRunner(artifact)
    assert torch.get_num_threads() == 3  # the user's OMP_NUM_THREADS: untouched
    runner.close()
