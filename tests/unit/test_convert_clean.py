"""`groundtruth convert` builds the matrix's artifacts; `groundtruth clean` drops a runtime's.

The project has its own cache directory: clean deletes, and the shared cache belongs
to other runs too. The runtimes are real (llama.cpp through llama-cpp-python on the
tiny llama, the transformers reference); apr is not installed here, so its cells are
reported as skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_groundtruth.cli.main import main
from pytest_groundtruth.config.settings import load_settings
from pytest_groundtruth.context import Context

ROOT = Path(__file__).parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.groundtruth]\nmodels = ["tiny-llama"]\n'
        'runtimes = ["llamacpp", "transformers", "apr"]\n'
        'quantizations = ["int4", "float32"]\nsuites = ["token", "roundtrip"]\n'
        f'cache_dir = {str(tmp_path / "cache")!r}\n')
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    shutil.copytree(ROOT / "oracle" / "tiny-llama", tmp_path / "oracle" / "tiny-llama")
    return tmp_path


def artifact_dirs(project: Path) -> list[str]:
    folder = project / "cache" / "artifacts" / "tiny-llama"
    return sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir() if p.is_dir())


def builds(project: Path) -> int:
    return len((project / "cache" / "builds.log").read_text().splitlines())


def results(project: Path) -> dict[str, int]:
    """Result files per kind, by the artifact they are tagged with."""
    found: dict[str, int] = {}
    for path in (project / "cache" / "results").glob("*/*.json"):
        tag = json.loads(path.read_text())["artifact"]
        found[tag] = found.get(tag, 0) + 1
    return found


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_convert_builds_each_artifact_once_and_clean_drops_one_runtime(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--root", str(project)]) == 0
    out = capsys.readouterr()
    lines = sorted(line.split(":")[0] for line in out.out.splitlines())
    assert lines == [
        "ready    tiny-llama llamacpp float32",
        "ready    tiny-llama llamacpp int4",
        "ready    tiny-llama llamacpp int4 export+reimport",
        "ready    tiny-llama transformers float32",
        "skipped  tiny-llama apr int4",
        "skipped  tiny-llama apr int4 export+reimport",
    ]
    assert "apr" in out.out.split("skipped  tiny-llama apr int4:")[1]  # the reason
    assert "4 ready, 2 skipped" in out.err
    assert artifact_dirs(project) == ["llamacpp-float32", "llamacpp-int4", "llamacpp-int4-export",
                                      "llamacpp-int4-reimport"]
    built = builds(project)
    assert main(["convert", "--root", str(project)]) == 0
    assert builds(project) == built  # all cached: nothing built again

    ctx = Context.open(load_settings(project))
    try:
        llama = ctx.results.generate("tiny-llama", "llamacpp", "int4", "code")[1]
        reference = ctx.results.generate("tiny-llama", "transformers", "float32", "code")[1]
    finally:
        ctx.close()
    assert results(project) == {llama.key: 1, reference.key: 1}
    capsys.readouterr()

    assert main(["clean", "--root", str(project), "--runtime", "llamacpp"]) == 0
    assert "4 artifact(s) and 1 result(s) of llamacpp dropped" in capsys.readouterr().err
    assert artifact_dirs(project) == []
    assert results(project) == {reference.key: 1}

    assert main(["clean", "--root", str(project), "--runtime", "transformers"]) == 0
    assert results(project) == {}

    assert main(["convert", "--root", str(project), "--runtime", "llamacpp"]) == 0
    assert builds(project) == 2 * built  # rebuilt from scratch


@pytest.mark.slow
def test_no_carriage_return_frames_when_output_is_not_a_terminal(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_groundtruth.cli.main", "oracle", "--root",
         str(project), "--model", "tiny-llama", "--check", "--tolerance"],
        # --tolerance: under xdist the oracle runs with a share of the threads, and a
        # float32 sum in another order moves the last digit of a log-probability
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr
    assert len([line for line in done.stdout.splitlines()
                if line.startswith(("unchanged  ", "noise  "))]) == 8  # a line per step
