"""LoRA: the built-in adapter, its GGUF form, the merge, and the lora suite as users run it.

Real parts throughout: peft builds, applies and merges the adapters; llama.cpp applies
the GGUF adapter at load time; llama.cpp's own ``convert_lora_to_gguf.py`` (from the
llama-cpp-python sdist) is the reference for our adapter writer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.ggufio import lora as lora_gguf
from pytest_groundtruth.ggufio import names
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.models import lora
from pytest_groundtruth.models.sources import (
    LoraParts,
    ModelError,
    ResolvedModel,
    lora_parts,
    resolve,
)
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner, LlamaCppRuntime
from pytest_groundtruth.runtimes.lora import hot_runner
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

Project = Callable[..., pytest.Pytester]
TOOL = ('models = ["tiny-llama"]\nruntimes = ["transformers", "llamacpp"]\n'
        'quantizations = ["int8"]\nsuites = ["lora"]\n'
        'prompts = ["arithmetic", "code", "completion", "greeting"]\n')


@pytest.fixture(scope="module")
def parts(gt_cache: Path) -> LoraParts:
    return lora_parts(BUILTIN["tiny-llama-lora"], gt_cache)


# --------------------------------------------------------------------------- the adapter


def test_the_builtin_adapter_is_deterministic_and_sized(
        tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    base = tiny("llama").path
    lora.build_adapter(base, tmp_path / "a")
    lora.build_adapter(base, tmp_path / "b")
    first = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()
    assert first == (tmp_path / "b" / "adapter_model.safetensors").read_bytes()
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == \
        (8, 16, ["q_proj", "v_proj"])
    weights = load_file(str(base / "model.safetensors"))
    adapter = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    pairs = sorted({k.rsplit(".lora_", 1)[0] for k in adapter})
    assert len(pairs) == 4  # 2 layers x (q_proj, v_proj)
    for name in pairs:
        a, b = adapter[f"{name}.lora_A.weight"], adapter[f"{name}.lora_B.weight"]
        weight = weights[name.removeprefix("base_model.model.") + ".weight"]
        size = np.linalg.norm(16 / 8 * (b.astype(np.float64) @ a)) / np.linalg.norm(weight)
        assert size == pytest.approx(lora.RELATIVE_SIZE, rel=1e-5)


def test_a_bad_adapter_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(lora.AdapterError, match="no such adapter directory"):
        lora.check_adapter(tmp_path / "absent")
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    with pytest.raises(lora.AdapterError, match="peft_type is 'IA3', not 'LORA'"):
        lora.check_adapter(tmp_path / "ia3")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (tmp_path / "bin" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(lora.AdapterError, match=r"adapter_model\.bin is a pickle"):
        lora.check_adapter(tmp_path / "bin")


def test_a_lora_model_needs_its_base_in_the_roster(gt_cache: Path) -> None:
    from dataclasses import replace

    orphan = replace(BUILTIN["tiny-llama-lora"], slug="orphan", source="lora:nowhere")
    with pytest.raises(ModelError, match="base model 'nowhere' is not in the roster"):
        resolve(orphan, gt_cache)


# --------------------------------------------------------------------------- GGUF adapter


@pytest.fixture(scope="module")
def convert_lora(tmp_path_factory: pytest.TempPathFactory, gt_cache: Path
                 ) -> Callable[[Path, Path, Path], Path]:
    """llama.cpp's convert_lora_to_gguf.py from the installed llama-cpp-python's sdist."""
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        pytest.skip("llama-cpp-python is not installed: pip install 'pytest-groundtruth[llamacpp]'")
    sdist = gt_cache / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        pytest.skip(f"{sdist} is missing: run `nox -s tests` (it downloads the sdist) or `pip "
                    f"download --no-deps --no-binary :all: llama-cpp-python=={version} -d "
                    f"{sdist.parent}`")
    root = tmp_path_factory.mktemp("llama.cpp")
    wanted = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if any(f"/vendor/llama.cpp/{w}" in m.name for w in wanted)]
        tar.extractall(root, members=members, filter="data")
    (script,) = root.glob("*/vendor/llama.cpp/convert_lora_to_gguf.py")

    def convert(adapter: Path, base: Path, out: Path) -> Path:
        done = subprocess.run([sys.executable, str(script), "--base", str(base), "--outtype",
                               "f32", "--outfile", str(out), str(adapter)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"{script.name} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return out

    return convert


def gguf_tensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_our_adapter_gguf_is_llamacpps_own(arch: str, gt_cache: Path, tmp_path: Path,
                                           convert_lora: Callable[[Path, Path, Path], Path]
                                           ) -> None:
    from dataclasses import replace

    spec = replace(BUILTIN["tiny-llama-lora"], slug=f"tiny-{arch}-lora",
                   source=f"lora:tiny-{arch}")
    parts = lora_parts(spec, gt_cache)
    ours = tmp_path / "ours.gguf"
    lora_gguf.export_lora_gguf(parts.adapter, parts.base.path, ours)
    theirs = convert_lora(parts.adapter, parts.base.path, tmp_path / "theirs.gguf")
    mine, reference = gguf_tensors(ours), gguf_tensors(theirs)
    assert sorted(mine) == sorted(reference)
    assert "blk.0.attn_q.weight.lora_b" in mine
    for name, data in reference.items():
        assert mine[name].dtype == data.dtype, name
        assert mine[name].shape == data.shape, name
        assert mine[name].tobytes() == data.tobytes(), name
    ours_kv, theirs_kv = scan_gguf(ours).scalars, scan_gguf(theirs).scalars
    for key in ("general.type", "general.architecture", "adapter.type", "adapter.lora.alpha"):
        assert ours_kv[key] == theirs_kv[key], key
    assert lora_gguf.adapter_problem(ours) is None
    assert "not a LoRA adapter" in str(lora_gguf.adapter_problem(
        prepare(LlamaCppRuntime(), parts.base, "float32", ArtifactCache(tmp_path)).path))


@pytest.mark.requires_llamacpp
def test_hot_applied_equals_merged_and_an_unpermuted_adapter_does_not(
        parts: LoraParts, gt_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = LlamaCppRuntime(n_threads=1)
    cache = ArtifactCache(gt_cache)
    base = prepare(runtime, parts.base, "float32", cache)
    merged = prepare(runtime, resolve(BUILTIN["tiny-llama-lora"], gt_cache), "float32", cache)
    good, bad = tmp_path / "good.gguf", tmp_path / "bad.gguf"
    lora_gguf.export_lora_gguf(parts.adapter, parts.base.path, good)
    # The classic bug: lora_b written without llama.cpp's q/k row permutation.
    monkeypatch.setattr(names, "to_gguf_layout", lambda hp, name, w: w)
    lora_gguf.export_lora_gguf(parts.adapter, parts.base.path, bad)
    prompt = "def fibonacci(n):"
    with LlamaCppRunner(merged, n_threads=1, kv_cache="f32") as runner:
        reference = runner.generate(prompt, 32).tokens
    with hot_runner(runtime, base, good) as runner:
        assert runner.generate(prompt, 32).tokens == reference
        assert "lora_path=" in runner.load_call
    with hot_runner(runtime, base, bad) as runner:
        assert runner.generate(prompt, 32).tokens != reference


# --------------------------------------------------------------------------- the suite


def _results(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    data = json.loads((pytester.path / "r.json").read_text())
    return {r["name"]: r["result"] for r in data["results"]}


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_the_suite_passes_and_the_adapter_changes_the_output(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest("--gt-results", "r.json", "-n", "2")
    result.assert_outcomes(passed=9)
    seen = _results(pytester)
    changes = seen["lora[tiny-llama-lora-transformers-changes-float32]"]
    assert changes["measured"]["changed_prompts"] == 4
    assert changes["measured"]["min_logit_change"] > 1
    merge = seen["lora[tiny-llama-lora-transformers-merge-float32-code]"]
    assert merge["measured"]["mismatches"] == 0
    assert 0 < merge["measured"]["max_abs_logit_diff"] < 1e-4
    hot = seen["lora[tiny-llama-lora-llamacpp-hot-float32-code]"]
    assert hot["measured"]["mismatches"] == 0


def zero_adapter(base: Path, out: Path) -> Path:
    """A freshly initialised peft LoRA (B = 0): merging it changes nothing."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                                  target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(str(out))
    return out


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_a_users_adapter_runs_the_same_checks_and_a_no_op_adapter_proves_nothing(
        make_project: Project, tiny: Callable[[str], ResolvedModel]) -> None:
    pytester = make_project(
        TOOL + "[tool.groundtruth.adapters.zero]\nbase = 'tiny-llama'\npath = 'adapters/zero'\n",
        models=("tiny-llama",))
    zero_adapter(tiny("llama").path, pytester.path / "adapters" / "zero")
    result = pytester.runpytest("-k", "zero")
    result.assert_outcomes(passed=8, failed=1)
    result.stdout.fnmatch_lines([
        "lora[[]zero-transformers-changes-float32[]]: the adapter changes the greedy tokens on "
        "0/4 prompts (< 1); the smallest per-prompt logit change is 0 (< 0.01)",
        "  note: arithmetic: logits move by only 0: the merge check cannot tell a merged "
        "adapter from none here",
    ])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[tool.groundtruth.adapters.x]\nbase = 'nope'\n",
         "*[[]adapters.x[]]: key 'base' = 'nope' is not in the roster*"),
        ("[tool.groundtruth.adapters.x]\nbase = 'tiny-llama'\nrank = 4\n",
         "*[[]adapters.x[]]: must be a table with a string key 'base'*"),
        ("[tool.groundtruth.adapters.tiny-qwen2]\nbase = 'tiny-llama'\n",
         "*[[]adapters.tiny-qwen2[]]: 'tiny-qwen2' is already a roster model*"),
    ],
)
def test_bad_adapter_config_names_the_key(make_project: Project, table: str,
                                          message: str) -> None:
    pytester = make_project(TOOL + table)
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret != 0
    result.stdout.fnmatch_lines([message])


@pytest.mark.slow
def test_a_missing_user_adapter_skips_with_what_to_fix(make_project: Project) -> None:
    pytester = make_project(
        TOOL + "[tool.groundtruth.adapters.mine]\nbase = 'tiny-llama'\npath = 'adapters/x'\n",
        models=("tiny-llama",))
    result = pytester.runpytest("-rs", "-k", "mine and code and merge")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*model 'mine' (lora:tiny-llama:adapters/x): *adapters/x: no "
                                 "such adapter directory*[[]tool.groundtruth.adapters.mine[]]*"])


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_the_merged_model_goes_through_the_runtimes_like_any_roster_model(
        make_project: Project) -> None:
    pytester = make_project(
        'models = ["tiny-llama-lora"]\nruntimes = ["llamacpp"]\n'
        'quantizations = ["float32", "int8"]\nsuites = ["token", "integrity", "agreement"]\n'
        'prompts = ["arithmetic", "code", "completion", "greeting"]\n',
        models=("tiny-llama-lora",))
    result = pytester.runpytest("--gt-results", "r.json")
    seen = _results(pytester)
    assert sorted(seen) == sorted(
        [f"token[tiny-llama-lora-llamacpp-{q}-{p}]" for q in ("float32", "int8")
         for p in ("arithmetic", "code", "completion", "greeting")]
        + [f"{s}[tiny-llama-lora-llamacpp-{v}{q}]" for s, v in
           (("integrity", ""), ("agreement", ""), ("agreement", "text-"))
           for q in ("float32", "int8")])
    # GGUF export of the merged float32 model: the merged oracle's tokens exactly.
    for p in ("arithmetic", "code", "completion", "greeting"):
        assert seen[f"token[tiny-llama-lora-llamacpp-float32-{p}]"]["measured"] == 0
    assert seen["integrity[tiny-llama-lora-llamacpp-int8]"]["passed"]
    result.stdout.fnmatch_lines(["*tiny-llama-lora*llamacpp*float32*4C*"])


def test_suite_report_writes_the_figures_as_markdown(gt_cache: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_groundtruth.cli.main import main

    out = tmp_path / "report.md"
    code = main(["suite-report", "--root", str(Path(__file__).parents[2]), "--cache-dir",
                 str(gt_cache), "--model", "tiny-llama", "--runtime", "transformers",
                 "--quant", "float32", "--suite", "lora", "--write", str(out)])
    assert code == 0
    text = out.read_text()
    assert text.startswith("<!-- generated by `groundtruth suite-report`")
    assert "| `lora[tiny-llama-lora-transformers-changes-float32]` | pass | the adapter " \
           "changes the greedy tokens on 7/7 prompts" in text  # 5 text prompts, 2 chats
    assert text.count("| pass |") == 6  # the change case, one merge case per text prompt
    assert text in capsys.readouterr().out
