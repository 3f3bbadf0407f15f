"""The integrity checks as pure functions: bounds, metadata, tokenizer, every tensor.

Correct conversions must pass (ours at every type, other correct encoders of the same
formats, llama.cpp's converter and the embedded file); broken ones, made here by
re-exporting a modified copy of a tiny model or rewriting a GGUF, must fail naming the
field or tensor. ``slow`` tests use the embedded SmolLM2.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.ggufio import export_gguf, ggml_encoder, names
from pytest_groundtruth.ggufio.quantize import quantize
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.integrity import expected_error, metadata
from pytest_groundtruth.integrity.check import (
    ENGINE_FAILED,
    EngineTokenizer,
    Measurement,
    check_apr,
    check_directory,
    check_gguf,
    evaluate,
)
from pytest_groundtruth.integrity.diagnose import rows_out_of_place
from pytest_groundtruth.integrity.findings import PASSED, SKIPPED, IntegrityReport
from pytest_groundtruth.integrity.report import MAX_LISTED, notes, summary, tensor_table
from pytest_groundtruth.integrity.tensors import judge, measure
from pytest_groundtruth.integrity.tokenizer import (
    BATTERY,
    TokenizerFacts,
    compare_tokenizers,
    reference_facts,
)
from pytest_groundtruth.models.sources import ResolvedModel, resolve

FloatArray = npt.NDArray[np.float32]
HAS_LLAMACPP = importlib.util.find_spec("llama_cpp") is not None
PROMPTS = [p.read_text().strip() for p in sorted(
    (Path(__file__).resolve().parents[2] / "prompts").glob("*.txt"))]
NO_ENGINE = "not checked in this test"


def pre_tokenizer(model: ResolvedModel) -> str:
    """The resolved model's pre-tokenizer (the tiny builder's, or the GGUF source's)."""
    assert model.spec.tokenizer_pre is not None
    return model.spec.tokenizer_pre


def check(path: Path, model: ResolvedModel, engine: EngineTokenizer | str = NO_ENGINE,
          slack: float = 1.0) -> IntegrityReport:
    return evaluate(check_gguf(path, model.path, PROMPTS, engine), slack)


def failures(report: IntegrityReport) -> dict[str, str]:
    """artifact tensor / metadata field -> problem, for every failure."""
    out = {f.field: f"{f.expected} != {f.actual}" for f in report.metadata.failures}
    out.update({f.artifact_name: f.problem for f in report.tensors.failures})
    out.update({f"tokenizer:{f.text}": f.problem for f in report.tokenizer.failures})
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def exported(tiny: Callable[[str], ResolvedModel],
             tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``exported(arch, qtype, pre=None)``: a tiny model exported once per module."""
    root = tmp_path_factory.mktemp("integrity-gguf")
    done: dict[tuple[str, str, str | None], Path] = {}

    def get(arch: str, qtype: str, pre: str | None = None) -> Path:
        key = (arch, qtype, pre)
        if key not in done:
            model = tiny(arch)
            out = root / f"{arch}.{qtype}.{pre or 'default-pre'}.gguf"
            export_gguf(model.path, out, qtype, pre or pre_tokenizer(model))
            done[key] = out
        return done[key]

    return get


def modified_copy(model: ResolvedModel, out: Path,
                  tensors: Callable[[dict[str, FloatArray]], None] | None = None,
                  config: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A copy of ``model``'s directory with its weights and/or config.json edited."""
    shutil.copytree(model.path, out)
    if tensors is not None:
        weights = load_file(str(out / "model.safetensors"))
        tensors(weights)
        save_file(weights, str(out / "model.safetensors"))
    if config is not None:
        data = json.loads((out / "config.json").read_text())
        config(data)
        (out / "config.json").write_text(json.dumps(data))
    return out


def broken_export(model: ResolvedModel, tmp: Path, qtype: str,
                  tensors: Callable[[dict[str, FloatArray]], None] | None = None,
                  config: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Export a modified copy of ``model`` (to be checked against the unmodified one)."""
    copy = modified_copy(model, tmp / "modified", tensors, config)
    out = tmp / f"broken.{qtype}.gguf"
    export_gguf(copy, out, qtype, pre_tokenizer(model))
    return out


def rewrite_gguf(src: Path, out: Path, drop: tuple[str, ...] = (),
                 rename: dict[str, str] | None = None, values: dict[str, Any] | None = None,
                 add: dict[str, FloatArray] | None = None) -> Path:
    """Copy a GGUF through gguf's reader and writer with tensors dropped, renamed or added
    and key/values changed (tensor bytes otherwise untouched)."""
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(out, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = (values or {}).get(field.name, field.contents())
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for tensor in reader.tensors:
        if tensor.name not in drop:
            writer.add_tensor((rename or {}).get(tensor.name, tensor.name), tensor.data,
                              raw_dtype=tensor.tensor_type)
    for name, data in (add or {}).items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


# --------------------------------------------------------------------------- schemes


def test_scheme_factors_follow_the_format() -> None:
    q40, q80, q41 = (expected_error.scheme(t) for t in ("Q4_0", "Q8_0", "Q4_1"))
    assert q40.factor == pytest.approx(1.1 * 8 / 7)
    assert q80.factor == pytest.approx(1.1 * 128 / 127)
    assert q41.factor == pytest.approx(1.1)
    assert q41.affine
    assert not q40.affine
    assert (q40.kind, q40.precision) == ("exact", 2.0**-11)
    f32 = expected_error.scheme("F32")
    assert (f32.kind, f32.block, f32.precision) == ("exact", 1, 2.0**-23)
    assert expected_error.scheme("IQ2_XXS").kind == "none"  # needs an importance matrix
    assert expected_error.scheme("torchao.Int8Tensor").precision == 2.0**-23
    expected = "ggml" if HAS_LLAMACPP else "none"
    assert expected_error.scheme("Q4_K").kind == expected


def test_bounds_formula() -> None:
    s = expected_error.scheme("Q4_0")
    b = expected_error.bounds(s, 0.1, n=10_000, n_blocks=10_000 // 32, offset=0.01)
    k, u = s.factor, 2.0**-11
    assert b.max_rel_error == pytest.approx(k * 0.1 + u)
    assert b.max_scale_dev == pytest.approx((k * 0.1) ** 2 + u + 4 * 0.1 / 100)
    assert b.max_bias_dev == pytest.approx(4 * (0.1 + u) / np.sqrt(312) + u * 0.01)
    doubled = expected_error.bounds(s, 0.1, 10_000, 312, 0.01, slack=2.0)
    assert doubled.max_rel_error == pytest.approx(2 * b.max_rel_error)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_ggml_and_gguf_quants_encode_identically(qtype: str) -> None:
    if ggml_encoder.available(qtype) is not None:
        pytest.skip(str(ggml_encoder.available(qtype)))
    data = np.random.default_rng(1).standard_normal((16, 256)).astype(np.float32)
    ours = gguf.quants.quantize(data, gguf.GGMLQuantizationType[qtype])
    assert np.array_equal(ggml_encoder.encode(data, qtype), ours.view(np.uint8))


# --------------------------------------------------------------------------- judging values


def _blocks(x: FloatArray, size: int = 32) -> FloatArray:
    return x.reshape(-1, size).astype(np.float32)


def _f16(x: npt.NDArray[Any]) -> FloatArray:
    return np.asarray(x, dtype=np.float16).astype(np.float32)


def q4_0_symmetric7(x: FloatArray) -> FloatArray:
    """A correct Q4_0 encoder that covers each block with +-7 steps (never -8)."""
    b = _blocks(x)
    d = _f16(np.abs(b).max(axis=1, keepdims=True) / 7)
    q = np.clip(np.rint(b / np.where(d == 0, 1, d)), -8, 7)
    return (q * d).reshape(x.shape)


def q4_0_least_squares(x: FloatArray) -> FloatArray:
    """The reference's integers with each block's scale refitted by least squares."""
    b = _blocks(x)
    pick = np.abs(b).argmax(axis=1)[:, None]
    d = np.take_along_axis(b, pick, axis=1) / -8
    q = np.clip(np.trunc(b / np.where(d == 0, 1, d) + 8.5), 0, 15) - 8
    den = (q * q).sum(axis=1, keepdims=True)
    fit = _f16((b * q).sum(axis=1, keepdims=True) / np.where(den == 0, 1, den))
    return (q * fit).reshape(x.shape)


def q4_0_round_d_up(x: FloatArray) -> FloatArray:
    """The reference encoding with every float16 scale rounded away from zero."""
    b = _blocks(x)
    pick = np.abs(b).argmax(axis=1)[:, None]
    d = np.take_along_axis(b, pick, axis=1) / -8
    q = np.clip(np.trunc(b / np.where(d == 0, 1, d) + 8.5), 0, 15) - 8
    d16 = d.astype(np.float16)
    away = np.where(np.abs(d16.astype(np.float32)) < np.abs(d),
                    np.nextafter(d16, np.copysign(np.float16(np.inf), d16)), d16)
    return (q * away.astype(np.float32)).reshape(x.shape)


def q8_0_full_range(x: FloatArray) -> FloatArray:
    """A correct Q8_0 encoder using the int8 level -128: the block's extreme value maps to
    -128 (Q4_0's sign-aligned choice, step amax/128 instead of amax/127)."""
    b = _blocks(x)
    pick = np.abs(b).argmax(axis=1)[:, None]
    d = _f16(np.take_along_axis(b, pick, axis=1) / -128)
    return (np.clip(np.rint(b / np.where(d == 0, 1, d)), -128, 127) * d).reshape(x.shape)


def q4_1_least_squares(x: FloatArray) -> FloatArray:
    """Q4_1 with the reference's integers and (d, m) refitted by least squares."""
    b = _blocks(x)
    lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
    d = (hi - lo) / 15
    q = np.clip(np.trunc((b - lo) / np.where(d == 0, 1, d) + 0.5), 0, 15)
    qm, bm = q.mean(axis=1, keepdims=True), b.mean(axis=1, keepdims=True)
    var = ((q - qm) ** 2).sum(axis=1, keepdims=True)
    fit = ((q - qm) * (b - bm)).sum(axis=1, keepdims=True) / np.where(var == 0, 1, var)
    fit = np.where(var == 0, d, fit)
    out: FloatArray = (q * _f16(fit) + _f16(bm - fit * qm)).reshape(x.shape)
    return out


ALTERNATIVES: dict[str, tuple[str, Callable[[FloatArray], FloatArray]]] = {
    "q4_0 +-7": ("Q4_0", q4_0_symmetric7),
    "q4_0 least squares": ("Q4_0", q4_0_least_squares),
    "q4_0 scales rounded up": ("Q4_0", q4_0_round_d_up),
    "q8_0 -128": ("Q8_0", q8_0_full_range),
    "q4_1 least squares": ("Q4_1", q4_1_least_squares),
}


def weights(seed: int, rows: int, blocks: int, tail: float, mean: float) -> FloatArray:
    """Weight-like values: Student-t rows (``tail`` degrees of freedom), per-row scales."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(tail, size=(rows, 32 * blocks)) * rng.uniform(0.5, 2, (rows, 1))
    return (0.05 * x + mean).astype(np.float32)


def stats_of(x: FloatArray, a: FloatArray, qtype: str) -> Any:
    return measure(x, a, expected_error.reference(x, qtype), name="w", artifact_name="w",
                   qtype=qtype)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(16, 96), blocks=st.integers(2, 24),
       tail=st.sampled_from([3.0, 5.0, 30.0]), mean=st.sampled_from([0.0, 0.02]),
       alternative=st.sampled_from(sorted(ALTERNATIVES)))
def test_other_correct_encoders_pass(seed: int, rows: int, blocks: int, tail: float,
                                     mean: float, alternative: str) -> None:
    qtype, encoder = ALTERNATIVES[alternative]
    x = weights(seed, rows, blocks, tail, mean)
    verdict = judge(stats_of(x, encoder(x), qtype))
    assert verdict.ok, verdict


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), qtype=st.sampled_from(["Q8_0", "Q4_0", "Q4_1", "Q5_0"]))
def test_the_reference_encoding_is_identical(seed: int, qtype: str) -> None:
    x = weights(seed, 32, 8, 5.0, 0.0)
    stats = stats_of(x, expected_error.reference(x, qtype), qtype)  # type: ignore[arg-type]
    assert stats.identical
    assert judge(stats).ok


@pytest.mark.parametrize(("qtype", "factor"), [("Q8_0", 1.002), ("Q8_0", 0.998),
                                               ("Q4_0", 1.03), ("Q4_0", 0.97),
                                               ("F32", 1 + 1e-5)])
def test_a_whole_tensor_scale_below_quantization_noise_fails(qtype: str, factor: float) -> None:
    x = weights(7, 256, 16, 5.0, 0.0)
    r = expected_error.reference(x, qtype)
    assert r is not None
    stats = stats_of(x, (r * np.float32(factor)).astype(np.float32), qtype)
    verdict = judge(stats)
    assert "scaled x" in verdict.problem
    if qtype != "F32":  # the error alone would not have caught it
        assert stats.rel_error <= expected_error.scheme(qtype).factor * stats.ref_rel_error


def test_a_bias_fails() -> None:
    x = weights(3, 256, 16, 5.0, 0.0)
    r = expected_error.reference(x, "Q8_0")
    assert r is not None
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    verdict = judge(stats_of(x, r + np.float32(0.003 * rms), "Q8_0"))
    assert "biased by" in verdict.problem


def test_nan_and_shuffled_rows_are_named() -> None:
    x = weights(5, 64, 4, 5.0, 0.0)
    r = expected_error.reference(x, "Q8_0")
    assert r is not None
    with_nan = r.copy()
    with_nan[3, 5] = np.nan
    assert judge(stats_of(x, with_nan, "Q8_0")).problem == "1 NaN/Inf value(s)"
    order = np.arange(64)
    order[[1, 9, 20]] = order[[20, 1, 9]]
    assert rows_out_of_place(r[order], x, 0.05) == (
        "rows permuted: 3 of 64 rows hold another source row's values")
    assert rows_out_of_place(r, x, 0.05) == ""
    assert rows_out_of_place(r * 1.5, x, 0.05) == ""  # wrong, but not a permutation


# --------------------------------------------------------------------------- metadata


@pytest.mark.slow
def test_metadata_fields_of_a_correct_export(tiny: Callable[[str], ResolvedModel],
                                             exported: Callable[..., Path]) -> None:
    report = check(exported("llama", "Q8_0"), tiny("llama"))
    assert report.metadata.status == PASSED
    fields = {f.field: f for f in report.metadata.findings}
    for name in ("architecture", "layers", "attention heads", "KV heads", "hidden size",
                 "feed-forward size", "vocab size", "context length", "rope theta",
                 "rope scaling", "norm epsilon", "tied embeddings", "BOS id", "EOS id",
                 "pad id", "adds BOS"):
        assert fields[name].ok, fields[name]
    assert fields["rope theta"].key == "llama.rope.freq_base"
    assert fields["EOS id"].actual == 2
    assert fields["norm epsilon"].expected == 1e-5  # config.json's double, GGUF's float32


@pytest.mark.slow
def test_metadata_mismatch_names_the_field_and_both_values(
        tiny: Callable[[str], ResolvedModel], exported: Callable[..., Path],
        tmp_path: Path) -> None:
    broken = rewrite_gguf(exported("llama", "Q8_0"), tmp_path / "b.gguf", values={
        "llama.rope.freq_base": 500000.0, "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.add_bos_token": True})
    report = check(broken, tiny("llama"))
    assert set(failures(report)) == {"rope theta", "EOS id", "adds BOS"}
    text = summary(report)
    assert text.startswith("3 integrity problem(s) (3 metadata); first: metadata rope theta "
                           "(llama.rope.freq_base): the source says 10000")
    assert "the artifact 500000" in text
    table = "\n".join(notes(report))
    assert "field       artifact key" in table
    assert "rope theta  llama.rope.freq_base" in table


def test_absent_keys_take_llama_cpps_defaults() -> None:
    scalars = {"general.architecture": "llama", "llama.attention.head_count": 4,
               "llama.embedding_length": 64, "tokenizer.ggml.model": "gpt2",
               "tokenizer.ggml.pre": "llama-bpe"}
    got = metadata.gguf_fields(scalars, {"tokenizer.ggml.tokens": 10}, ["token_embd.weight"])
    assert got["KV heads"].value == 4
    assert got["KV heads"].note.startswith("absent")
    assert got["rope theta"].value == 10000.0
    assert got["rope dimensions"].value == 16
    assert got["vocab size"].value == 10
    assert got["adds BOS"].value is True  # llama-bpe adds BOS when the key is absent
    assert got["tied embeddings"].value is True
    assert got["layers"].value is None


def test_tied_embeddings() -> None:
    tied = {"tied embeddings": metadata.Value(True, "config")}
    untied = {"tied embeddings": metadata.Value(False, "config")}
    present = {"tied embeddings": metadata.Value(False, "output.weight")}
    absent = {"tied embeddings": metadata.Value(True, "output.weight")}
    (ok,) = metadata.compare_fields(tied, present)
    assert ok.ok
    assert "compared with the embedding" in ok.note
    (bad,) = metadata.compare_fields(untied, absent)
    assert not bad.ok


def test_float_fields_compare_as_float32() -> None:
    want = {"norm epsilon": metadata.Value(1e-5, "config")}
    (same,) = metadata.compare_fields(want, {"norm epsilon": metadata.Value(
        float(np.float32(1e-5)), "gguf")})
    (other,) = metadata.compare_fields(want, {"norm epsilon": metadata.Value(1e-6, "gguf")})
    assert same.ok
    assert not other.ok


# --------------------------------------------------------------------------- tokenizer


def test_compare_tokenizers_reports_encode_and_decode_differences() -> None:
    def ref_encode(text: str) -> list[int]:
        return [ord(c) for c in text]

    def engine_encode(text: str) -> list[int]:
        return [ord(c) for c in text.replace("é", "e")]

    def engine_decode(ids: Any) -> str:
        return "".join(chr(i) for i in ids).upper()

    found = compare_tokenizers(["abc", "café"], ref_encode,
                               lambda ids: "".join(chr(i) for i in ids), engine_encode,
                               engine_decode)
    assert [(f.text, f.problem) for f in found] == [("abc", "decode"), ("café", "encode")]
    assert found[1].first_difference == 3
    assert found[0].actual_text == "ABC"


def test_reference_facts_of_the_embedded_tokenizer(tiny: Callable[[str], ResolvedModel]
                                                   ) -> None:
    from transformers import AutoTokenizer

    model = tiny("llama")
    facts = reference_facts(AutoTokenizer.from_pretrained(model.path),
                            names.read_config(model.path))
    assert facts == TokenizerFacts(1, (2,), 2, False, False, facts.special_tokens)
    assert "<|im_start|>" in facts.special_tokens


@pytest.mark.slow
@pytest.mark.requires_llamacpp
@pytest.mark.skipif(not HAS_LLAMACPP, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_llama_cpp_tokenizes_like_the_reference(
        arch: str, tiny: Callable[[str], ResolvedModel], exported: Callable[..., Path]) -> None:
    path = exported(arch, "Q8_0")
    report = check(path, tiny(arch), engine_of(path, tiny(arch)))
    assert report.tokenizer.status == PASSED, notes(report)
    assert report.tokenizer.checked >= len(BATTERY)


@pytest.mark.slow
@pytest.mark.requires_llamacpp
@pytest.mark.skipif(not HAS_LLAMACPP, reason="llama-cpp-python is not installed")
def test_a_wrong_pre_tokenizer_is_a_tokenizer_mismatch(
        tiny: Callable[[str], ResolvedModel], exported: Callable[..., Path]) -> None:
    path = exported("llama", "Q8_0", pre="default")
    report = check(path, tiny("llama"), engine_of(path, tiny("llama")))
    assert report.tokenizer.status == "failed"
    assert report.metadata.status == PASSED
    assert report.tensors.status == PASSED
    first = report.tokenizer.failures[0]
    assert first.problem == "encode"
    assert first.expected_ids != first.actual_ids
    assert summary(report).startswith(f"{len(report.tokenizer.failures)} integrity problem(s)"
                                      f" ({len(report.tokenizer.failures)} tokenizer); "
                                      "first: tokenizer: ")


def test_an_engine_that_cannot_load_the_file_fails_the_tokenizer_section(
        tiny: Callable[[str], ResolvedModel], exported: Callable[..., Path]) -> None:
    report = check(exported("llama", "Q8_0"), tiny("llama"), f"{ENGINE_FAILED}: boom")
    assert not report.passed
    assert report.metadata.status == PASSED
    assert report.tensors.status == PASSED
    assert summary(report) == ("1 integrity problem(s) (1 tokenizer); first: tokenizer: "
                               "the engine could not load the artifact: boom")
    assert notes(report)[1] == "tokenizer: failed: the engine could not load the artifact: boom"


_ENGINES: dict[Path, Any] = {}


def engine_of(path: Path, model: ResolvedModel) -> EngineTokenizer:
    from pytest_groundtruth.runtimes.base import Artifact
    from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime

    if path not in _ENGINES:
        artifact = Artifact("llamacpp", model.slug, "int8", path, key=str(path), recipe="test")
        _ENGINES[path] = LlamaCppRuntime(n_ctx=256).open(artifact, model)
    runner = _ENGINES[path]
    return EngineTokenizer(runner.tokenize, runner.decode, "llama_cpp tokenize/decode")


@pytest.fixture(scope="module", autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    for runner in _ENGINES.values():
        runner.close()
    _ENGINES.clear()


# --------------------------------------------------------------------------- every tensor


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "qwen3", "gemma3", "phi3"])
@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"])
def test_correct_exports_pass(arch: str, qtype: str, tiny: Callable[[str], ResolvedModel],
                              exported: Callable[..., Path]) -> None:
    report = check(exported(arch, qtype), tiny(arch))
    assert report.passed, notes(report)
    assert report.tokenizer.status == SKIPPED
    assert report.tokenizer.reason == NO_ENGINE
    assert report.details["identical"] == report.tensors.checked  # the reference encoding
    assert summary(report).startswith("artifact consistent with the source: metadata ")
    assert f"tokenizer skipped, {report.tensors.checked} tensors (" in summary(report)


def _scale(name: str, factor: float) -> Callable[[dict[str, FloatArray]], None]:
    def edit(w: dict[str, FloatArray]) -> None:
        w[name] = (w[name] * np.float32(factor)).astype(np.float32)
    return edit


@pytest.mark.slow
@pytest.mark.parametrize(("qtype", "factor"), [("Q8_0", 1.01), ("Q4_0", 1.05)])
def test_a_scaled_tensor_is_named(qtype: str, factor: float,
                                  tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    model = tiny("llama")
    path = broken_export(model, tmp_path, qtype,
                         _scale("model.layers.1.mlp.down_proj.weight", factor))
    report = check(path, model)
    assert list(failures(report)) == ["blk.1.ffn_down.weight"]
    (finding,) = report.tensors.failures
    assert finding.name == "model.layers.1.mlp.down_proj.weight"
    assert re.search(r"scaled (by )?x1\.0", finding.problem), finding.problem
    assert finding.scale == pytest.approx(factor * (finding.ref_scale or 1), abs=2e-3)
    lines = notes(report)
    assert lines[2].startswith("tensors: 1 of 21 tensors wrong")
    assert lines[3].split() == ["tensor", "source", "shape", "type", "rel", "error",
                                "expected", "bound", "scale", "bias", "problem"]
    assert lines[5].split()[:4] == ["blk.1.ffn_down.weight",
                                    "model.layers.1.mlp.down_proj.weight", "[64,", "128]"]


def _copy_layer(w: dict[str, FloatArray]) -> None:
    for name in list(w):
        if name.startswith("model.layers.0."):
            w[name.replace("layers.0.", "layers.1.")] = w[name].copy()


def _norm_ones(w: dict[str, FloatArray]) -> None:
    w["model.layers.1.input_layernorm.weight"] = np.ones_like(
        w["model.layers.1.input_layernorm.weight"])


def _unpermuted_q(w: dict[str, FloatArray]) -> None:
    # the exporter permutes q; feeding it unpermuted rows leaves HF order in the GGUF
    name = "model.layers.0.self_attn.q_proj.weight"
    w[name] = names.unpermute(w[name], 4, 4)


def _shuffle_embedding(w: dict[str, FloatArray]) -> None:
    e = w["model.embed_tokens.weight"]
    rows = np.random.default_rng(0).choice(e.shape[0], 100, replace=False)
    e[np.sort(rows)] = e[rows].copy()


@pytest.mark.slow
@pytest.mark.parametrize(("edit", "named", "problem"), [
    (_copy_layer, "blk.1.attn_q.weight",
     "holds the values of model.layers.0.self_attn.q_proj.weight"),
    (_norm_ones, "blk.1.attn_norm.weight", "every value is 1"),
    (_unpermuted_q, "blk.0.attn_q.weight", "rows in transformers' order: the q/k RoPE"),
    (_shuffle_embedding, "token_embd.weight", "rows permuted: 99 of 49152 rows"),
], ids=["duplicated-layer", "norm-replaced", "qk-permutation-skipped", "embedding-shuffled"])
def test_broken_tensors_are_named_with_what_they_hold(
        edit: Callable[[dict[str, FloatArray]], None], named: str, problem: str,
        tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    model = tiny("llama")
    report = check(broken_export(model, tmp_path, "Q4_0", edit), model)
    found = failures(report)
    assert named in found, found
    assert found[named].startswith(problem), found[named]
    assert report.metadata.status == PASSED


@pytest.mark.slow
def test_missing_extra_and_misshaped_tensors(tiny: Callable[[str], ResolvedModel],
                                             exported: Callable[..., Path],
                                             tmp_path: Path) -> None:
    src = exported("llama", "Q8_0")
    path = rewrite_gguf(src, tmp_path / "b.gguf", drop=("blk.1.ffn_up.weight",),
                        rename={"blk.1.attn_norm.weight": "blk.7.attn_norm.weight"},
                        add={"blk.0.ffn_gate.bias": np.zeros(128, np.float32)})
    found = failures(check(path, tiny("llama")))
    assert found["blk.1.ffn_up.weight"] == "missing from the artifact"
    assert found["blk.1.attn_norm.weight"] == "missing from the artifact"
    assert found["blk.7.attn_norm.weight"].startswith("extra tensor: no transformers name")
    assert found["blk.0.ffn_gate.bias"] == ("extra tensor: the source has no "
                                            "model.layers.0.mlp.gate_proj.bias")
    shaped = rewrite_gguf(src, tmp_path / "s.gguf", drop=("output_norm.weight",),
                          add={"output_norm.weight": np.ones(32, np.float32)})
    assert failures(check(shaped, tiny("llama")))["output_norm.weight"] == (
        "shape [32], the source has [64]")


@pytest.mark.slow
def test_a_dropped_layer(tiny: Callable[[str], ResolvedModel], exported: Callable[..., Path],
                         tmp_path: Path) -> None:
    src = exported("llama", "Q4_0")
    layer1 = tuple(t.name for t in gguf.GGUFReader(src).tensors if t.name.startswith("blk.1."))
    path = rewrite_gguf(src, tmp_path / "b.gguf", drop=layer1, values={"llama.block_count": 1})
    report = check(path, tiny("llama"))
    assert summary(report).startswith(
        "10 integrity problem(s) (1 metadata, 9 tensors); first: metadata layers "
        "(llama.block_count): the source says 2")
    assert all(failures(report)[n] == "missing from the artifact" for n in layer1)


@pytest.mark.slow
def test_the_tensor_table_stops_after_a_readable_number(tiny: Callable[[str], ResolvedModel],
                                                        tmp_path: Path) -> None:
    model = tiny("llama")

    def scale_all(w: dict[str, FloatArray]) -> None:
        for name in w:
            w[name] = (w[name] * np.float32(1.5)).astype(np.float32)

    report = check(broken_export(model, tmp_path, "Q8_0", scale_all), model)
    assert len(report.tensors.failures) == 21
    table = tensor_table(report.tensors.failures)
    assert len(table) == 2 + MAX_LISTED + 1
    assert table[-1] == f"... and {21 - MAX_LISTED} more (all in the results JSON)"


@pytest.mark.slow
def test_slack_loosens_the_tensor_bounds(tiny: Callable[[str], ResolvedModel],
                                         tmp_path: Path) -> None:
    model = tiny("llama")
    path = broken_export(model, tmp_path, "Q8_0",
                         _scale("model.layers.1.mlp.down_proj.weight", 1.01))
    measurement = check_gguf(path, model.path, PROMPTS, NO_ENGINE)
    assert not evaluate(measurement).passed
    assert evaluate(measurement, slack=100).passed


@pytest.mark.slow
def test_measurements_survive_json(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    model = tiny("llama")
    path = broken_export(model, tmp_path, "Q4_0", _norm_ones)
    measurement = check_gguf(path, model.path, PROMPTS, NO_ENGINE)
    again = Measurement.from_json(json.loads(json.dumps(measurement.to_json())))
    assert again == measurement
    assert notes(evaluate(again)) == notes(evaluate(measurement))


# --------------------------------------------------------------------------- loaded modules


@pytest.mark.slow
def test_transformers_module_weights(tiny: Callable[[str], ResolvedModel]) -> None:
    import torch

    from pytest_groundtruth.integrity.torch_weights import cast_reference
    from pytest_groundtruth.runtimes.base import Artifact
    from pytest_groundtruth.runtimes.hf import TransformersRunner

    model = tiny("llama")
    for dtype in ("float32", "bfloat16"):
        artifact = Artifact("transformers", model.slug, dtype, model.path, "k", "r")
        runner = TransformersRunner(artifact)
        reference = cast_reference(getattr(torch, dtype))
        report = evaluate(check_directory(model.path, model.path, PROMPTS, runner.model,
                                          reference, runner.load_call))
        assert report.passed, notes(report)
        assert report.metadata.status == SKIPPED
        assert report.metadata.reason.startswith("the artifact is the source directory")
        assert report.tensors.checked == 21
        with torch.no_grad():
            runner.model.model.layers[0].mlp.up_proj.weight.mul_(1.02)
        broken = evaluate(check_directory(model.path, model.path, PROMPTS, runner.model,
                                          reference, runner.load_call))
        assert list(failures(broken)) == ["model.layers.0.mlp.up_proj.weight"]
        runner.close()


@pytest.mark.requires_torchao
@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_torchao_module_weights(quant: str, tiny: Callable[[str], ResolvedModel]) -> None:
    import torch

    from pytest_groundtruth.integrity.torch_weights import torchao_reference
    from pytest_groundtruth.runtimes.base import Artifact
    from pytest_groundtruth.runtimes.torchao_rt import TorchaoRunner, make_config

    model = tiny("llama")
    runner = TorchaoRunner(Artifact("torchao", model.slug, quant, model.path, "k", "r"))
    report = evaluate(check_directory(model.path, model.path, PROMPTS, runner.model,
                                      torchao_reference(lambda: make_config(quant),
                                                        torch.float32), runner.load_call))
    assert report.passed, notes(report)
    types = {row["qtype"] for row in report.details["tensors"]}
    assert "torch.float32" in types
    assert any(t.startswith("torchao.") for t in types)
    runner.close()


# --------------------------------------------------------------------------- apr


def test_apr_inspect_metadata_only(tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")
    info = {"architecture": "llama", "num_layers": 2, "num_heads": 4, "hidden_size": 64,
            "vocab_size": 49152, "tensor_count": 21, "format": "apr"}
    report = evaluate(check_apr(info, model.path, "apr inspect x.apr --json"))
    assert report.passed
    assert report.metadata.checked == 5
    assert report.tokenizer.status == SKIPPED
    assert "tokenizer" in report.tokenizer.reason
    assert report.tensors.status == SKIPPED
    assert report.tensors.reason.startswith("apr's JSON commands do not expose tensor values")
    named = evaluate(check_apr({**info, "architecture": "LlamaForCausalLM"}, model.path, "c"))
    assert named.passed
    bad = evaluate(check_apr({**info, "num_layers": 3, "hidden_size": None}, model.path, "c"))
    assert list(failures(bad)) == ["layers"]
    assert any("not reported by apr inspect: hidden size" in n for n in notes(bad))


# --------------------------------------------------------------------------- the embedded model


@pytest.fixture(scope="module")
def embedded(gt_cache: Path) -> ResolvedModel:
    return resolve(BUILTIN["smollm2-135m"], gt_cache)


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_0", "Q4_1"])
def test_embedded_model_exports_pass_in_seconds(qtype: str, embedded: ResolvedModel,
                                                tmp_path: Path) -> None:
    path = tmp_path / f"smollm2.{qtype}.gguf"
    export_gguf(embedded.path, path, qtype, pre_tokenizer(embedded))
    start = time.perf_counter()
    report = check(path, embedded)
    seconds = time.perf_counter() - start
    assert report.passed, notes(report)
    assert report.tensors.checked == 272
    assert seconds < 60, seconds  # a few seconds on 2 cores (the reference tokenizer included)


@pytest.mark.slow
def test_the_embedded_file_itself_passes(embedded: ResolvedModel) -> None:
    """llama.cpp's converter and quantizer made it; every tensor is what the source is."""
    assert embedded.gguf_file is not None
    report = check(embedded.gguf_file, embedded)
    assert report.passed, notes(report)
    rows = report.details["tensors"]
    assert {r["qtype"] for r in rows} == {"Q4_1", "Q8_0", "F32"}
    assert all(r["rel_error"] == 0 for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_llama_cpp_converter_output_passes(
        outtype: str, llama_cpp_convert: Callable[[Path, str, Path], Path],
        embedded: ResolvedModel, tmp_path: Path) -> None:
    theirs = llama_cpp_convert(embedded.path, outtype, tmp_path / f"theirs.{outtype}.gguf")
    report = check(theirs, embedded)
    assert report.passed, notes(report)
    assert report.metadata.checked == 20


# --------------------------------------------------------------------------- architectures


@pytest.mark.slow
def test_architecture_metadata_fields(tiny: Callable[[str], ResolvedModel],
                                      exported: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny("gemma3")
    report = check(exported("gemma3", "Q8_0"), model)
    fields = {f.field: f for f in report.metadata.findings}
    assert fields["sliding window"].expected == 512
    assert fields["rope theta (sliding layers)"].expected == 10000.0
    assert fields["head size"].expected == 256
    assert fields["head size"].key == "gemma3.attention.key_length"
    broken = rewrite_gguf(exported("gemma3", "Q8_0"), tmp_path / "window.gguf",
                          values={"gemma3.attention.sliding_window": 128})
    assert failures(check(broken, model)) == {"sliding window": "512 != 128"}
    phi3 = {f.field: f for f in check(exported("phi3", "Q8_0"), tiny("phi3")).metadata.findings}
    assert phi3["original context length"].ok
    assert phi3["sliding window"].expected == 0  # none in config.json; llama.cpp's 0


def test_unknown_layout_rules_are_reported_not_passed_silently(
        monkeypatch: pytest.MonkeyPatch, tiny: Callable[[str], ResolvedModel],
        exported: Callable[..., Path]) -> None:
    qwen3_file, gemma3_file = exported("qwen3", "F32"), exported("gemma3", "F32")
    monkeypatch.delitem(names.LAYOUTS, "qwen3")
    monkeypatch.delitem(names.LAYOUTS, "gemma3_text")
    # qwen3 needs no rule: every tensor matches as stored, and the result says what it
    # rested on
    report = check(qwen3_file, tiny("qwen3"))
    assert report.passed, notes(report)
    assert "no layout rules are known for architecture 'qwen3'" in summary(report)
    # gemma3 stores its norms as 1 + w: without the rule those fail, and say why
    report = check(gemma3_file, tiny("gemma3"))
    assert not report.passed
    bad = {f.artifact_name: f for f in report.tensors.failures}
    assert set(bad) == {n for n in bad if n.endswith("norm.weight")}
    assert len(bad) == 13  # 6 per layer (q/k norms included) and the output norm
    assert "a norm offset (as Gemma's) that the layout rules of 'gemma3' do not have" in (
        bad["blk.0.attn_norm.weight"].problem)
    assert "no layout rules are known for architecture 'gemma3'" in summary(report)


@pytest.mark.slow
def test_a_missing_norm_offset_is_named(tiny: Callable[[str], ResolvedModel],
                                        exported: Callable[..., Path], tmp_path: Path) -> None:
    model = tiny("gemma3")
    values = np.asarray(load_file(str(model.path / "model.safetensors"))[
        "model.layers.1.input_layernorm.weight"], dtype=np.float32)
    unshifted = tmp_path / "unshifted.gguf"  # w written as stored in transformers: no + 1
    rewrite_gguf(exported("gemma3", "F32"), unshifted, drop=("blk.1.attn_norm.weight",),
                 add={"blk.1.attn_norm.weight": values})
    report = check(unshifted, model)
    (finding,) = report.tensors.failures
    assert finding.artifact_name == "blk.1.attn_norm.weight"
    assert "the norm offset (+1, Gemma3Model) was not applied" in finding.problem


def patched(src: Path, out: Path, tensor: str,
            change: Callable[[npt.NDArray[np.uint8], tuple[int, ...]], None]) -> Path:
    """A byte copy of ``src`` with one tensor's raw bytes changed in place."""
    shutil.copyfile(src, out)
    scan = scan_gguf(out)
    info = scan.tensors[tensor]
    data = np.memmap(out, dtype=np.uint8, mode="r+")
    start = scan.data_offset + info.offset
    raw = data[start:start + info.nbytes]
    change(raw, tuple(reversed(info.dims)))
    data.flush()
    del data
    return out


@pytest.mark.requires_llamacpp
@pytest.mark.skipif(not HAS_LLAMACPP, reason="llama-cpp-python ships ggml's K-quant encoders")
def test_k_quant_blocks_are_judged_one_by_one(tiny: Callable[[str], ResolvedModel],
                                              exported: Callable[..., Path],
                                              tmp_path: Path) -> None:
    model = tiny("qwen3")
    original = tmp_path / "q4_k_m.gguf"
    quantize(exported("qwen3", "F32"), original, "q4_k_m")
    report = check(original, model)
    assert report.passed, notes(report)
    sources = {"blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
               "blk.1.ffn_down.weight": "model.layers.1.mlp.down_proj.weight",
               "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
               "blk.1.attn_output.weight": "model.layers.1.self_attn.o_proj.weight"}
    tensors = scan_gguf(original).tensors
    name = next(n for n in sources if tensors[n].type == "Q4_K")  # the mix decides which
    source = np.asarray(load_file(str(model.path / "model.safetensors"))[sources[name]],
                        dtype=np.float32)
    per_row = source.shape[1] // 256  # super-blocks per row

    def weighted(raw: npt.NDArray[np.uint8], shape: tuple[int, ...]) -> None:
        # another correct encoder: the same format, an importance matrix's weights
        weights = np.exp(np.random.default_rng(3).normal(0, 1.5, shape[1])).astype(np.float32)
        raw[:] = ggml_encoder.encode(source, "Q4_K", importance=weights).reshape(-1)

    imatrix = check(patched(original, tmp_path / "imatrix.gguf", name, weighted), model)
    assert imatrix.passed, notes(imatrix)
    row = next(r for r in imatrix.details["tensors"] if r["artifact_name"] == name)
    assert 0 < row["block_ratio"] < expected_error.BLOCK_FACTOR

    def swapped(raw: npt.NDArray[np.uint8], shape: tuple[int, ...]) -> None:
        rows = raw.reshape(shape[0], -1)  # 144-byte Q4_K super-blocks, per_row in a row
        rows[[5, 40]] = rows[[40, 5]]

    report = check(patched(original, tmp_path / "swapped.gguf", name, swapped), model)
    (finding,) = report.tensors.failures
    assert finding.artifact_name == name
    assert finding.block_ratio is not None
    assert finding.block_ratio > 10
    assert finding.max_block_ratio == expected_error.BLOCK_FACTOR
    assert finding.problem.startswith("rows permuted: 2 of 64 rows"), finding.problem

    def zeroed(raw: npt.NDArray[np.uint8], shape: tuple[int, ...]) -> None:
        raw[144 * (7 * per_row):144 * (7 * per_row + 1)] = 0  # the first block of row 7

    report = check(patched(original, tmp_path / "zeroed.gguf", name, zeroed), model)
    (finding,) = report.tensors.failures
    assert ("1 block(s) of 256 hold more than 4x the reference encoding's error"
            in finding.problem), finding.problem
    assert "first in row 7" in finding.problem
