"""Any model a user adds, as users run it: a roster entry that is its source alone, every
quantization, every suite; and files from llama.cpp's own converter and quantizer supplied
as artifacts.

* Tiny qwen3, gemma3 and phi3 (and the embedded SmolLM2) given by ``source`` only run the
  whole matrix (llama.cpp at every quantizer type, torchao, transformers; oracles made in
  the project with ``groundtruth oracle``): nothing errors, and integrity and agreement
  raise no false alarm at any quantization.
* A Q4_K_M GGUF made by llama.cpp's ``convert_hf_to_gguf.py`` and ``llama_model_quantize``
  for a tiny model of each architecture passes integrity when supplied as the user's
  artifact; the same file with one tensor holding another layer's bytes fails, naming it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_groundtruth.config.roster import EMBEDDED_DIST, EMBEDDED_FILE
from pytest_groundtruth.ggufio import quantize as quantizer
from pytest_groundtruth.ggufio import quants
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.models.sources import ResolvedModel

pytestmark = [
    pytest.mark.requires_llamacpp,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed: pip install llama-cpp-python"),
]

Project = Callable[..., pytest.Pytester]
QUANTS = ("float32", "float16", "bfloat16", "int8", "int4", *quants.CATALOG)
RUNTIMES = ("llamacpp", "torchao", "transformers")
NO_FALSE_ALARMS = ("integrity", "agreement")


def source_only(entries: dict[str, str]) -> str:
    """The [tool.groundtruth] of a project whose roster entries are their sources alone."""
    toml = (f"models = {json.dumps(list(entries))}\nruntimes = {json.dumps(list(RUNTIMES))}\n"
            f"quantizations = {json.dumps(list(QUANTS))}\n")
    for slug, source in entries.items():
        toml += f'[tool.groundtruth.roster.{slug}]\nsource = "{source}"\n'
    return toml


def make_oracles(pytester: pytest.Pytester) -> None:
    done = pytester.run(sys.executable, "-m", "pytest_groundtruth.cli.main", "oracle",
                        "--quiet", timeout=1800)
    assert done.ret == 0, done.stderr.str()[-3000:]


def records(path: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(path.read_text())["results"]
    return data


def assert_no_false_alarm(found: list[dict[str, Any]], models: list[str]) -> None:
    errors = [r["name"] for r in found if r["outcome"] == "failed" and r["result"] is None]
    assert not errors, f"errors (not verdicts): {errors}"
    alarms = [f"{r['name']}: {r['result']['summary']}" for r in found
              if r["case"]["suite"] in NO_FALSE_ALARMS and r["outcome"] != "passed"]
    assert not alarms, "\n".join(alarms)
    for model in models:
        for suite in NO_FALSE_ALARMS:
            ran = {r["case"]["quant"] for r in found
                   if r["case"]["model"] == model and r["case"]["suite"] == suite}
            assert ran >= set(QUANTS), (model, suite, set(QUANTS) - ran)
    roundtrips = {r["case"]["quant"] for r in found if r["case"]["suite"] == "roundtrip"
                  and r["result"] is not None}
    assert roundtrips >= {"int4", "q4_k_m", "q5_k_m", "q6_k"}


@pytest.mark.slow
@pytest.mark.exhaustive  # 1659 cases, 54 min on 2 cores
def test_source_only_tiny_models_run_the_whole_matrix(make_project: Project) -> None:
    entries = {"my-qwen3": "tiny:qwen3", "my-gemma3": "tiny:gemma3", "my-phi3": "tiny:phi3"}
    pytester = make_project(source_only(entries))
    make_oracles(pytester)
    result = pytester.runpytest("-n", "2", "--gt-results", "results.json", timeout=7200)
    found = records(pytester.path / "results.json")
    assert_no_false_alarm(found, list(entries))
    suites = {r["case"]["suite"] for r in found if r["outcome"] in ("passed", "failed")}
    assert suites >= {"canary", "token", "drift", "roundtrip", "ppl", "topk", "agreement",
                      "integrity"}
    assert result.ret in (0, 1)  # the count-based suites may falsify; nothing else


@pytest.mark.slow
@pytest.mark.exhaustive  # every quantizer type x 3 runtimes on the 135M model
def test_the_embedded_model_from_its_source_alone(make_project: Project) -> None:
    entries = {"embedded": f"pkg:{EMBEDDED_DIST}/{EMBEDDED_FILE}"}
    pytester = make_project(source_only(entries))
    make_oracles(pytester)
    pytester.runpytest("-n", "2", "--gt-results", "results.json", timeout=7200)
    found = records(pytester.path / "results.json")
    assert_no_false_alarm(found, list(entries))
    every_suite = {r["case"]["suite"] for r in found if r["case"]["quant"] == "q4_k_m"
                   and r["result"] is not None}
    assert every_suite >= {"token", "roundtrip", "ppl", "topk", "agreement", "integrity"}


# --------------------------------------------------------------------------- their files


TOOL = ('models = ["tiny-{arch}"]\nruntimes = ["llamacpp"]\nquantizations = ["q4_k_m"]\n'
        'suites = ["integrity"]\n')
CONVERTER_LIMITS = {
    # llama.cpp's converter hashes the tokenizer's output to name its pre-tokenizer;
    # transformers loads a qwen2 model's tokenizer as Qwen2Tokenizer, whose splits on the
    # embedded model's vocabulary match no entry of its table.
    "qwen2": "the tiny qwen2's tokenizer: 'The BPE pre-tokenizer was not recognized'",
    # GPT2Model.set_gguf_parameters reads config.json's n_ctx, which transformers 5 no
    # longer writes (n_positions only).
    "gpt2": "llama.cpp's GPT2Model needs config.json's n_ctx (KeyError 'n_ctx')",
}


def duplicated_layer(src: Path, out: Path) -> tuple[Path, str]:
    """``src`` with layer 0's copy of a feed-forward tensor holding layer 1's bytes (a
    duplicated layer), and the tensor's GGUF name. A K-quant mix gives some layers' tensors
    more bits (Q4_K_M: ffn_down of the first layers is Q6_K), so the tensor is one that has
    the same type and shape in both layers."""
    shutil.copyfile(src, out)
    scan = scan_gguf(out)
    for kind in ("ffn_down", "ffn_up", "attn_output"):
        first = scan.tensors[f"blk.0.{kind}.weight"]
        second = scan.tensors[f"blk.1.{kind}.weight"]
        if (first.type, first.dims) == (second.type, second.dims):
            break
    else:
        raise AssertionError(f"{src}: no feed-forward tensor of one type in layers 0 and 1")
    data = np.memmap(out, dtype=np.uint8, mode="r+")
    at = scan.data_offset
    data[at + first.offset:at + first.offset + first.nbytes] = np.array(
        data[at + second.offset:at + second.offset + second.nbytes])
    data.flush()
    del data
    return out, f"blk.0.{kind}.weight"


@pytest.mark.slow
@pytest.mark.parametrize("arch", [
    "llama", "qwen3", "gemma3", "phi3",
    *(pytest.param(a, marks=pytest.mark.xfail(strict=True, reason=why))
      for a, why in CONVERTER_LIMITS.items())])
def test_llama_cpps_own_files_as_user_artifacts(
        arch: str, make_project: Project, tiny: Callable[[str], ResolvedModel],
        llama_cpp_convert: Callable[[Path, str, Path], Path], tmp_path: Path) -> None:
    f32 = llama_cpp_convert(tiny(arch).path, "f32", tmp_path / "theirs.f32.gguf")
    theirs = tmp_path / "theirs.q4_k_m.gguf"
    quantizer.quantize(f32, theirs, "q4_k_m")
    types = {t.type for t in scan_gguf(theirs).tensors.values()}
    broken, tensor = duplicated_layer(theirs, tmp_path / "broken.q4_k_m.gguf")
    pytester = make_project(TOOL.format(arch=arch))
    test = f"integrity[[]tiny-{arch}-llamacpp-q4_k_m[]]"

    result = pytester.runpytest("--gt-artifact", f"tiny-{arch}:llamacpp:q4_k_m={theirs}")
    result.assert_outcomes(passed=1)
    # llama.cpp's mix, not one type: K-quants where rows split into 256-value super-blocks
    # (tiny qwen3, gemma3, phi3), legacy fallbacks where they do not (tiny llama's 64-wide)
    assert len(types - {"F32"}) >= 2, types
    assert arch == "llama" or types & {"Q4_K", "Q6_K"}, types

    result = pytester.runpytest("--gt-artifact", f"tiny-{arch}:llamacpp:q4_k_m={broken}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"{test}: * integrity problem(s) *tensor {tensor} (model.layers.0.mlp.*): holds "
        "the values of model.layers.1.mlp.*"])
