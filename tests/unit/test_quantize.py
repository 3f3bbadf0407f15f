"""The GGUF types people ship: llama.cpp's quantizer, its catalog, bits-per-weight order,
and llama.cpp's own converter as a supported path (llama-cpp-python's sdist).

The quantizer tests run ``llama_model_quantize`` on a float32 GGUF of the tiny qwen3
(its 256-wide ``ffn_down`` and 512-wide ``attn_output`` rows take K-quants).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.core.failures import EngineFailure, RuntimeUnavailable
from pytest_groundtruth.ggufio import export_gguf, hfconvert, quants
from pytest_groundtruth.ggufio import quantize as quantizer
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.suites.drift import ordered_pairs

requires_llamacpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed: pip install llama-cpp-python")


# --------------------------------------------------------------------------- catalog


def test_the_catalog_is_ordered_by_llama_cpps_documented_sizes() -> None:
    shipped = ["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k"]
    bits = [quants.CATALOG[q].bits for q in shipped]
    assert bits == sorted(bits, reverse=True)
    assert quants.bits_per_weight("q4_k_m") == pytest.approx(4.56, abs=0.01)  # 4.58G @ 8.03B
    assert quants.bits_per_weight("iq4_xs") == 4.25
    assert quants.bits_per_weight("int8") == quants.bits_per_weight("q8_0")
    assert quants.bits_per_weight("int4") == quants.bits_per_weight("q4_0")
    assert quants.bits_per_weight("float32") == 32.0
    assert quants.bits_per_weight("mystery") is None
    assert not set(quants.NEEDS_IMATRIX) & set(quants.CATALOG)
    assert not set(quants.LEFT_OUT) & set(quants.CATALOG)


def test_drift_pairs_follow_bits_per_weight() -> None:
    assert ordered_pairs(["int8", "int4"]) == [("int8", "int4")]  # the original pair
    pairs = ordered_pairs(["q4_k_m", "int8", "q2_k", "q6_k", "int4", "q4_0"])
    assert pairs[0] == ("int8", "int4")
    assert ("int8", "q6_k") in pairs
    assert ("q6_k", "q4_k_m") in pairs
    assert ("q4_k_m", "int4") in pairs
    assert ("q4_k_m", "q4_0") in pairs  # int4 and q4_0: one level, Q4_0
    assert ("q4_0", "q2_k") in pairs
    assert ("int8", "q2_k") not in pairs  # only neighbouring levels
    assert all(quants.bits_per_weight(h) > quants.bits_per_weight(lo)  # type: ignore[operator]
               for h, lo in pairs)
    assert ordered_pairs(["float32", "bfloat16"]) == [("float32", "bfloat16")]
    assert ordered_pairs(["int8", "custom"]) == []


# --------------------------------------------------------------------------- the quantizer


# A legacy, a K-quant mix and an importance-free IQ type (half a second each: llama.cpp's
# quantizer in a child process).
FAST_TYPES = ("q8_0", "q4_k_m", "iq3_xxs")


@pytest.fixture(scope="module")
def f32(tiny: Callable[[str], ResolvedModel], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny("qwen3")
    out = tmp_path_factory.mktemp("quantize") / "f32.gguf"
    export_gguf(model.path, out, "F32", "smollm")
    return out


@pytest.mark.requires_llamacpp
@requires_llamacpp
@pytest.mark.parametrize("quant", [  # one per family in the fast loop, the rest slow
    q if q in FAST_TYPES else pytest.param(q, marks=pytest.mark.slow) for q in quants.CATALOG])
def test_every_catalog_type_is_made_by_llama_cpps_quantizer(
        quant: str, f32: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{quant}.gguf"
    call = quantizer.quantize(f32, out, quant)
    assert f"LLAMA_FTYPE_MOSTLY_{quants.CATALOG[quant].ftype}" in call
    scan = scan_gguf(out)
    types = Counter(t.type for t in scan.tensors.values())
    assert scan.scalars["general.file_type"] == quantizer.ftype_number(
        quants.CATALOG[quant].ftype)
    assert set(scan.tensors) == set(scan_gguf(f32).tensors)
    assert types["F32"] == 9  # norms stay float32
    main = quants.CATALOG[quant].main
    if main.endswith("_K") or main.startswith("IQ3"):
        # 256-wide rows (ffn_down, attn_output) take super-block types; 64-wide fall back
        assert any(t.endswith("_K") or t.startswith("IQ") for t in types), types
    assert len(types) >= 2  # mixed files are the norm


@pytest.mark.requires_llamacpp
@requires_llamacpp
@pytest.mark.parametrize("quant", ["iq2_xxs", "q2_k_s"])
def test_types_that_need_an_importance_matrix_are_refused(quant: str, f32: Path,
                                                          tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="importance matrix"):
        quantizer.quantize(f32, tmp_path / "x.gguf", quant)
    # llama.cpp itself says why, when asked directly
    code = quantizer.main([str(f32), str(tmp_path / "y.gguf"), quant.upper(), "2"])
    assert code != 0


@pytest.mark.requires_llamacpp
@requires_llamacpp
def test_a_failing_quantizer_is_an_engine_failure_with_its_stderr(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(EngineFailure) as info:
        quantizer.quantize(broken, tmp_path / "out.gguf", "q4_k_m")
    assert "llama_model_quantize" in info.value.call
    assert info.value.stderr


# --------------------------------------------------------------------------- llama.cpp's converter


@pytest.mark.requires_llamacpp
@requires_llamacpp
def test_a_missing_converter_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.delenv(hfconvert.SDIST_ENV, raising=False)
    reason = hfconvert.unavailable(tmp_path)
    assert reason is not None
    assert "pip download --no-deps --no-binary :all: llama-cpp-python==" in reason
    assert str(tmp_path / "sdist") in reason
    with pytest.raises(RuntimeUnavailable, match="pip download"):
        hfconvert.converter_script(tmp_path)
    monkeypatch.setenv(hfconvert.SDIST_ENV, str(tmp_path / "nope.tar.gz"))
    assert f"{hfconvert.SDIST_ENV}={tmp_path / 'nope.tar.gz'}: no such file" == (
        hfconvert.unavailable(tmp_path))


def test_the_converter_is_unpacked_once_and_names_the_pre_tokenizer(
        gt_cache: Path, tiny: Callable[[str], ResolvedModel]) -> None:
    reason = hfconvert.unavailable(gt_cache)
    if reason:
        pytest.skip(reason)
    script = hfconvert.converter_script(gt_cache)
    assert script.is_file()
    assert (script.parent / "conversion").is_dir()
    assert (script.parent / "gguf-py" / "gguf").is_dir()
    assert hfconvert.converter_script(gt_cache) == script
    probe, table = hfconvert.pre_tokenizer_table(gt_cache)
    assert "🦙" in probe
    assert len(table) > 50
    assert hfconvert.tokenizer_pre(tiny("qwen3").path, gt_cache) == "smollm"

