"""The integrity suite as users run it: pytest on a project, artifacts supplied by path.

The tiny llama at int4 on llama.cpp: our own conversion passes; a GGUF with a wrong
RoPE theta, one written with the wrong pre-tokenizer and one with a scaled tensor fail,
each naming the field, the string or the tensor, with the table in the failure text.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pytest_groundtruth.ggufio import export_gguf
from pytest_groundtruth.models.sources import ResolvedModel

pytestmark = [
    pytest.mark.requires_llamacpp,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed: pip install llama-cpp-python"),
]

Project = Callable[..., pytest.Pytester]
TOOL = ('models = ["tiny-llama"]\nruntimes = ["llamacpp"]\nquantizations = ["int4"]\n'
        'suites = ["integrity"]\n')
TEST = "integrity[[]tiny-llama-llamacpp-int4[]]"


def pre_tokenizer(model: ResolvedModel) -> str:
    """The resolved model's pre-tokenizer (the tiny builder's, or the GGUF source's)."""
    assert model.spec.tokenizer_pre is not None
    return model.spec.tokenizer_pre


@pytest.fixture(scope="module")
def artifacts(tiny: Callable[[str], ResolvedModel],
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Broken int4 (Q4_0) GGUFs of the tiny llama, each wrong in one way."""
    model = tiny("llama")
    root = tmp_path_factory.mktemp("integrity-artifacts")
    good = root / "good.gguf"
    export_gguf(model.path, good, "Q4_0", pre_tokenizer(model))

    rope = root / "rope.gguf"  # the same tensors, llama.rope.freq_base changed
    reader = gguf.GGUFReader(good)
    writer = gguf.GGUFWriter(rope, "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = 500000.0 if field.name == "llama.rope.freq_base" else field.contents()
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    pre = root / "pre.gguf"  # written with llama.cpp's "default" pre-tokenizer
    export_gguf(model.path, pre, "Q4_0", "default")

    copy = root / "scaled-source"  # one weight scaled by 1.05 before conversion
    shutil.copytree(model.path, copy)
    weights = load_file(str(copy / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj.weight"
    weights[name] = (weights[name] * np.float32(1.05)).astype(np.float32)
    save_file(weights, str(copy / "model.safetensors"))
    scaled = root / "scaled.gguf"
    export_gguf(copy, scaled, "Q4_0", pre_tokenizer(model))
    return {"rope": rope, "pre": pre, "scaled": scaled}


@pytest.mark.slow
def test_a_correct_conversion_passes(make_project: Project) -> None:
    pytester = make_project(TOOL)
    result = pytester.runpytest("--gt-results", "r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["model*runtime*quant*integrity*",
                                 "tiny-llama*llamacpp*int4*1C*"])
    (record,) = json.loads((pytester.path / "r.json").read_text())["results"]
    details = record["result"]["details"]
    assert {k: v["status"] for k, v in details["sections"].items()} == {
        "metadata": "passed", "tokenizer": "passed", "tensors": "passed"}
    assert details["identical"] == 21
    assert record["result"]["summary"].startswith(
        "artifact consistent with the source: metadata 20 fields, tokenizer ")


@pytest.mark.slow
def test_a_metadata_mismatch_names_the_field(make_project: Project,
                                             artifacts: dict[str, Path]) -> None:
    pytester = make_project(TOOL)
    result = pytester.runpytest(f"--gt-artifact=tiny-llama:llamacpp:int4={artifacts['rope']}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"{TEST}: 1 integrity problem(s) (1 metadata); first: metadata rope theta "
        "(llama.rope.freq_base): the source says 10000 (config.json rope_theta), the "
        "artifact 500000",
        "  metadata: 1 of 20 fields wrong (GGUF key/values of rope.gguf)",
        "    field       artifact key          source  artifact  source value from",
        "    ----------*",
        "    rope theta  llama.rope.freq_base  10000   500000    config.json rope_theta",
        "  tokenizer: * strings consistent with the source*",
        "  tensors: 21 tensors consistent with the source*",
        "  artifact: *rope.gguf",
    ])


@pytest.mark.slow
def test_a_tokenizer_mismatch_names_the_string(make_project: Project,
                                               artifacts: dict[str, Path]) -> None:
    pytester = make_project(TOOL)
    result = pytester.runpytest(f"--gt-artifact=tiny-llama:llamacpp:int4={artifacts['pre']}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"{TEST}: * integrity problem(s) (* tokenizer); first: tokenizer: * encodes to "
        "[[]*[]], the reference to [[]*[]] (first difference at token *)",
        "  metadata: 20 fields consistent with the source*",
        "  tokenizer: * of * strings wrong (llama_cpp.Llama(*tokenize() / decode())",
        "    text*check*at*reference*engine",
        "    *encode*",  # repr() quotes a string with an apostrophe in double quotes
        "  tensors: 21 tensors consistent with the source*",
    ])


@pytest.mark.slow
def test_a_tensor_fault_names_the_tensor_in_a_table(make_project: Project,
                                                   artifacts: dict[str, Path]) -> None:
    supplied = (f"[[artifacts]]\nmodel = 'tiny-llama'\nruntime = 'llamacpp'\n"
                f"quantization = 'int4'\npath = '{artifacts['scaled']}'\n")
    pytester = make_project(TOOL, groundtruth_toml=supplied)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"{TEST}: 1 integrity problem(s) (1 tensors); first: tensor blk.1.ffn_down.weight "
        "(model.layers.1.mlp.down_proj.weight): *scaled*x1.0*",
        "  bound: metadata and tokenizer exact; each tensor*; slack x1.0 (default)",
        "  tensors: 1 of 21 tensors wrong (every tensor against the source)",
        "    tensor*source*shape*type*rel error*expected*bound*scale*bias*problem",
        "    ------*",
        "    blk.1.ffn_down.weight*model.layers.1.mlp.down_proj.weight*[[]64, 128[]]"
        "*Q4_0*x1.0*",
    ])

    loosened = supplied + ("[[bounds]]\nsuite = 'integrity'\nslack = 100\n"
                           "reason = 'a deliberately scaled tensor'\n")
    (pytester.path / "tests" / "groundtruth.toml").write_text(loosened)
    again = pytester.runpytest("--gt-results", "r.json")
    again.assert_outcomes(passed=1)
    (record,) = json.loads((pytester.path / "r.json").read_text())["results"]
    assert record["result"]["bound_origin"].endswith("a deliberately scaled tensor")
