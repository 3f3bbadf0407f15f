"""`groundtruth compare`: the oracle's text and each runtime's side by side, per prompt; a
teacher against a student.

Real engines on the tiny llama (llama.cpp int8, torchao int8, transformers bfloat16: each
parts from the float32 oracle somewhere, the bfloat16 reference stays identical on one
prompt), and two tiny models as teacher and student (same tokenizer: teacher-forced
agreement and KL; a student with a changed vocabulary: texts only, and it says why).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pytest_groundtruth.cli.main import main

ROOT = Path(__file__).parents[2]
F = TypeVar("F", bound=Callable[..., None])


def needs_engines(test: F) -> F:
    """llama.cpp and torchao (tests/conftest.py skips with the install command without them);
    seconds to minutes of engine work."""
    marked: F = pytest.mark.slow(pytest.mark.requires_torchao(pytest.mark.requires_llamacpp(
        test)))
    return marked


THREE = ["--runtime", "llamacpp", "--runtime", "torchao", "--runtime", "transformers",
         "--quant", "int8", "--quant", "bfloat16"]


@pytest.fixture
def project(tmp_path: Path, gt_cache: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.groundtruth]\nmodels = ["tiny-llama"]\ncache_dir = {str(gt_cache)!r}\n')
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    for slug in ("tiny-llama", "tiny-qwen2"):
        shutil.copytree(ROOT / "oracle" / slug, tmp_path / "oracle" / slug)
    return tmp_path


def compare(project: Path, capsys: pytest.CaptureFixture[str], *args: str,
            stream: str = "both") -> tuple[int, str]:
    code = main(["compare", "--root", str(project), *args])
    out, err = capsys.readouterr()
    return code, {"out": out, "err": err}.get(stream, out + err)


def as_json(project: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out = compare(project, capsys, *args, "--format", "json", stream="out")
    assert code == 0, out
    data: dict[str, Any] = json.loads(out)
    return data


@needs_engines
def test_three_runtimes_side_by_side(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = compare(project, capsys, "--model", "tiny-llama", *THREE,
                        "--prompt", "completion")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "groundtruth compare: tiny-llama: the float32 oracle against each runtime"
    assert "== prompt completion: 'The capital of France is'" in lines
    text = "\n".join(lines)
    for label in ("llamacpp/int8", "torchao/int8", "transformers/bfloat16"):
        assert f"  {label}" in text
    assert "transformers/bfloat16  identical (32/32 positions agree); teacher-forced top-1 " \
        "1.000" in text
    assert "first divergence at token 3 (character 23); 3/32 positions agree" in text  # llama.cpp
    header = next(line for line in lines if line.strip().startswith("pos"))
    assert header.split() == ["pos", "oracle", "llamacpp/int8", "torchao/int8",
                              "transformers/bfloat16", "near", "tie"]
    row3 = next(line for line in lines if line.strip().startswith("3 "))
    assert ">' " in row3  # llama.cpp's first divergence, marked
    assert "runtime 'transformers' offers none" not in text


@needs_engines
def test_json_positions_agree_with_the_tokens(project: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = as_json(project, capsys, "--model", "tiny-llama", *THREE)
    assert data["teacher"] == "tiny-llama"
    assert data["student"] is None
    assert [p["prompt"] for p in data["prompts"]] == ["arithmetic", "code", "completion",
                                                      "equation", "greeting", "capital",
                                                      "colours"]
    for prompt in data["prompts"]:
        assert [f"{c['runtime']}/{c['quant']}" for c in prompt["columns"]] == [
            "llamacpp/int8", "torchao/int8", "transformers/bfloat16"]
        for column in prompt["columns"]:
            view = column["view"]
            pairs = [(p["oracle_id"], p["runtime_id"]) for p in view["positions"]]
            differing = [i for i, (a, b) in enumerate(pairs) if a != b]
            assert view["first_divergence"] == (differing[0] if differing else None)
            assert view["agreed"] == len(pairs) - len(differing)
            assert 0.0 <= column["top1"] <= 1.0
            assert column["kl"] >= 0.0


@pytest.mark.slow
def test_two_models_teacher_and_student(project: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = compare(project, capsys, "--model", "tiny-llama", "--model", "tiny-qwen2",
                        "--prompt", "code", "--format", "markdown")
    assert code == 0, out
    assert "## teacher tiny-llama (its float32 oracle) against student tiny-qwen2" in out
    assert "| transformers/float32 |" in out  # the default: the student's own reference
    assert "teacher-forced top-1 0.000, KL " in out
    data = as_json(project, capsys, "--model", "tiny-llama", "--model", "tiny-qwen2",
                   "--prompt", "code")
    assert data["shared_tokenizer"] is True
    (column,) = data["prompts"][0]["columns"]
    assert column["model"] == "tiny-qwen2"
    assert column["top1"] < 0.5  # two random models disagree
    assert column["kl"] > 0.01


@pytest.mark.slow
def test_a_student_with_another_tokenizer_compares_texts_only(
    project: Path, capsys: pytest.CaptureFixture[str], tiny: Any, tmp_path: Path,
) -> None:
    student = tmp_path / "student"
    shutil.copytree(tiny("qwen2").path, student)
    tokenizer = json.loads((student / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    a, b = "hello", "world"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (student / "tokenizer.json").write_text(json.dumps(tokenizer))
    with (project / "pyproject.toml").open("a") as fh:
        fh.write(f'[tool.groundtruth.roster.other]\nsource = "path:{student}"\n'
                 'architecture = "qwen2"\nlayers = 2\nheads = 4\nkv_heads = 2\nhidden = 64\n'
                 'vocab = 49152\nppl_ceiling = 1e6\n')
    data = as_json(project, capsys, "--model", "tiny-llama", "--model", "other",
                   "--prompt", "greeting")
    assert data["shared_tokenizer"] is False
    (note,) = data["notes"]
    assert "teacher 'tiny-llama' and student 'other' do not share a tokenizer" in note
    (column,) = data["prompts"][0]["columns"]
    assert column["view"]["positions"] == []
    assert column["top1"] is None


def test_bad_requests_are_named(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = compare(project, capsys, "--model", "tiny-llama", "--model", "tiny-qwen2",
                        "--model", "tiny-gpt2")
    assert code == 2
    assert "compare takes one model, or two (teacher, student); got 3" in out
    # A quantization that none of the chosen runtimes offers is refused before any work
    # (it used to print an empty comparison with exit 0).
    code, out = compare(project, capsys, "--model", "tiny-llama", "--runtime", "transformers",
                        "--quant", "int8", "--prompt", "code")
    assert code == 2
    assert "--quant 'int8' is not one of bfloat16, float16, float32" in out
    code, out = compare(project, capsys, "--model", "nope")
    assert code == 2
    assert "key 'models' names 'nope'" in out
