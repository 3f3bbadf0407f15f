"""`groundtruth oracle`: reproduces files byte for byte, never overwrites silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_groundtruth.cli.main import main
from pytest_groundtruth.oracle.format import seal_of

ROOT = Path(__file__).parents[2]


@pytest.fixture
def project(tmp_path: Path, gt_cache: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.groundtruth]\nmodels = ["tiny-llama"]\ncache_dir = {str(gt_cache)!r}\n')
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    shutil.copytree(ROOT / "oracle" / "tiny-llama", tmp_path / "oracle" / "tiny-llama")
    return tmp_path


def run(project: Path, *args: str) -> int:
    return main(["oracle", "--root", str(project), "--quiet", *args])


@pytest.mark.slow
def test_regeneration_is_byte_identical(project: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """On one machine, generating twice gives the same bytes (and `--check` agrees)."""
    folder = project / "oracle" / "tiny-llama"
    shutil.rmtree(folder)
    assert run(project) == 0
    first = {p: p.read_bytes() for p in folder.rglob("*.json")}
    assert len(first) == 8  # five prompts, two chat prompts and the perplexity record
    assert run(project, "--check") == 0
    assert run(project, "--force") == 0
    assert {p: p.read_bytes() for p in folder.rglob("*.json")} == first
    assert "noise" not in capsys.readouterr().out


@pytest.mark.slow
def test_committed_oracles_match_within_cross_machine_noise(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The committed files were written on another CPU: same tokens, log-probs within noise."""
    assert run(project, "--check", "--tolerance", "1e-4") == 0
    for line in capsys.readouterr().out.splitlines():
        assert line.startswith(("unchanged", "noise")), line


@pytest.mark.slow
@pytest.mark.parametrize(("shift", "status", "code"),
                         [(5e-5, "noise", 0), (5e-3, "changed", 1)])
def test_tolerance_separates_noise_from_change(
        project: Path, capsys: pytest.CaptureFixture[str], shift: float, status: str,
        code: int) -> None:
    path = project / "oracle" / "tiny-llama" / "completion.json"
    data = json.loads(path.read_text())
    data["topk"][5]["logprobs"] = [x - shift for x in data["topk"][5]["logprobs"]]
    data["seal"] = seal_of(data)  # as written by another machine, not edited by hand
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    assert run(project, "--check", "--tolerance", "1e-4") == code
    out = capsys.readouterr().out
    assert f"{status:<10} {path}: " in out
    assert "position 5" in out


@pytest.mark.slow
def test_changed_oracle_is_not_overwritten_without_force(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project / "oracle" / "tiny-llama" / "code.json"
    data = json.loads(path.read_text())
    committed = data["tokens"][3]
    data["tokens"][3] = 7
    data["topk"][3] = {"ids": [7, *data["topk"][3]["ids"][1:]],
                       "logprobs": data["topk"][3]["logprobs"]}
    data["seal"] = seal_of(data)  # a regeneration that changed, not a hand edit
    tampered = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    path.write_text(tampered)

    assert run(project) == 1
    out = capsys.readouterr()
    assert f"changed    {path}: NOT written - tokens differ first at position 3: committed 7 " in (
        out.out)
    assert f"-> regenerated {committed} " in out.out
    assert "rerun with --force" in out.err
    assert path.read_text() == tampered

    assert run(project, "--force") == 0
    assert json.loads(path.read_text())["tokens"][3] == committed
    assert run(project, "--check") == 0  # now exactly what this machine generates


@pytest.mark.slow
def test_unreadable_oracle_is_reported_and_kept(project: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = project / "oracle" / "tiny-llama" / "greeting.json"
    path.write_text('{"schema": ')
    assert run(project) == 1
    assert "unreadable" in capsys.readouterr().out
    assert path.read_text() == '{"schema": '


@pytest.mark.slow
def test_check_writes_nothing_and_new_files_are_written(project: Path) -> None:
    shutil.rmtree(project / "oracle")
    assert run(project, "--check") == 1
    assert not (project / "oracle").exists()
    assert run(project) == 0
    written = sorted(p.relative_to(project).as_posix()
                     for p in (project / "oracle").rglob("*.json"))
    assert written == [
        "oracle/tiny-llama/arithmetic.json", "oracle/tiny-llama/capital.json",
        "oracle/tiny-llama/code.json", "oracle/tiny-llama/colours.json",
        "oracle/tiny-llama/completion.json", "oracle/tiny-llama/equation.json",
        "oracle/tiny-llama/eval/perplexity.json", "oracle/tiny-llama/greeting.json",
    ]
    assert not list(project.rglob("*.partial"))


def test_cpu_oracles_are_float32_only(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "--precision", "bfloat16") == 2
    assert "GPU oracles" in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(project: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "--model", "nope") == 2
    assert "'nope', which is not in the roster" in capsys.readouterr().err
