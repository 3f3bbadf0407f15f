"""Our GGUF exporter and reader against the source weights, gguf.quants, transformers'
GGUF loader and (where its sources are at hand) llama.cpp's own converter.

Fast tests use the tiny models; ``slow`` ones the embedded SmolLM2 (Q4_1 GGUF).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.ggufio import (
    EXPORTER_VERSION,
    GGUFExportError,
    GGUFFormatError,
    canonical_qtype,
    export_gguf,
    iter_hf_tensors,
    names,
    read_metadata,
)
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.models import tiny as tiny_builder
from pytest_groundtruth.models.sources import ResolvedModel, resolve

ARCHS = ("llama", "qwen2", "gpt2", "qwen3", "gemma3", "phi3")
PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
PROMPTS = {p.stem: p.read_text().strip() for p in sorted(PROMPTS_DIR.glob("*.txt"))}


def pre_tokenizer(model: ResolvedModel) -> str:
    """The resolved model's pre-tokenizer (the tiny builder's, or the GGUF source's)."""
    assert model.spec.tokenizer_pre is not None
    return model.spec.tokenizer_pre


@pytest.fixture(scope="module")
def exported(
    tiny: Callable[[str], ResolvedModel], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], Path]:
    """``exported(arch, qtype)``: the tiny model exported once per module."""
    root = tmp_path_factory.mktemp("gguf")
    done: dict[tuple[str, str], Path] = {}

    def get(arch: str, qtype: str) -> Path:
        if (arch, qtype) not in done:
            model = tiny(arch)
            out = root / arch / f"model.{qtype}.gguf"
            export_gguf(model.path, out, qtype, pre_tokenizer(model))
            done[arch, qtype] = out
        return done[arch, qtype]

    return get


def source_tensors(model: ResolvedModel) -> dict[str, np.ndarray[Any, Any]]:
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for part in sorted(model.path.glob("model*.safetensors")):
        tensors.update(load_file(str(part)))
    return tensors


def tensor_types(path: Path) -> dict[str, str]:
    return {name: tensor.type for name, tensor in scan_gguf(path).tensors.items()}


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layers", [1, 2, 30])
def test_every_tensor_name_maps_both_ways(arch: str, layers: int) -> None:
    """gguf.TensorNameMap names every tensor transformers builds for the config, and the
    inverse over the model's own names gives each name back."""
    key = "n_layer" if arch == "gpt2" else "num_hidden_layers"
    config = {**tiny_builder.CONFIGS[arch], key: layers}
    hp = names.hparams(config)
    hf_names = list(names.skeleton(config))
    mapped = names.TensorNames(hp, hf_names)
    assert not mapped.unmapped
    assert len(set(mapped.forward.values())) == len(mapped.forward)
    for hf in hf_names:
        assert mapped.hf(mapped.forward[hf]) == hf
    assert sum(n.startswith(f"blk.{layers - 1}.") for n in mapped.backward) > 0


def test_layout_rules_are_data_per_architecture() -> None:
    assert names.LAYOUTS["llama"].permute_qk
    assert not names.LAYOUTS["qwen3"].permute_qk
    assert names.LAYOUTS["gemma3_text"].norm_offset == 1.0
    assert names.LAYOUTS["gpt2"].conv1d
    unknown = names.layout_of("olmo2")
    assert not unknown.known
    assert unknown.arch_name == "olmo2"
    assert "no layout rules are known" in unknown.unknown_note
    with pytest.raises(GGUFExportError, match="no GGUF architecture"):
        names.layout_of("not-a-model")


@settings(max_examples=60, deadline=None)
@given(
    n_kv=st.integers(1, 4),
    group=st.integers(1, 3),
    half_dim=st.integers(1, 8),
    cols=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_permute_then_unpermute_is_identity(
    n_kv: int, group: int, half_dim: int, cols: int, seed: int
) -> None:
    n_head = n_kv * group
    rows = 2 * half_dim * n_kv
    shape = (rows, cols) if cols else (rows,)  # weights and biases
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    p = names.permute(w, n_head, n_kv)
    assert p.shape == w.shape
    assert np.array_equal(names.unpermute(p, n_head, n_kv), w)
    # a permutation of rows, the same one for every column
    assert sorted(p.reshape(rows, -1)[:, 0].tolist()) == sorted(w.reshape(rows, -1)[:, 0].tolist())


def test_permute_matches_the_converters_definition() -> None:
    # convert_hf_to_gguf.py LlamaModel.permute, written out for 2 heads of dim 4:
    # rows [h0: 0 1 2 3 | h1: 4 5 6 7] -> [0 2 1 3 | 4 6 5 7] (halves interleaved)
    w = np.arange(8, dtype=np.float32)
    assert names.permute(w, 2, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert names.permute(w, 6, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]  # GQA: kv heads


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("f32", "F32"),
        ("Q8_0", "Q8_0"),
        ("q4_1", "Q4_1"),
        ("bf16", "BF16"),
        ("float32", "F32"),
        ("float16", "F16"),
        ("bfloat16", "BF16"),
        ("int8", "Q8_0"),
        ("int4", "Q4_0"),
        ("INT4", "Q4_0"),
    ],
)
def test_qtype_names(given_name: str, expected: str) -> None:
    assert canonical_qtype(given_name) == expected


def test_exporter_version_is_a_string() -> None:
    assert isinstance(EXPORTER_VERSION, str)
    assert EXPORTER_VERSION


# --------------------------------------------------------------------------- F32 exactness


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_f32_export_reads_back_bit_exact(
    arch: str, tiny: Callable[[str], ResolvedModel], exported: Callable[[str, str], Path]
) -> None:
    model = tiny(arch)
    source = source_tensors(model)
    hp = names.hparams(names.read_config(model.path))
    seen = set()
    for name, array, qtype in iter_hf_tensors(exported(arch, "F32"), model.path):
        assert qtype == "F32"
        assert array.dtype == np.float32
        assert array.shape == source[name].shape, name
        if names.has_norm_offset(hp, name):
            # Gemma's norms are stored as float32(1 + w), which rounds w: exact in the
            # file's layout, and within float32 rounding of 1 + w in transformers'.
            stored = names.to_gguf_layout(hp, name, array)
            assert np.array_equal(stored, names.to_gguf_layout(hp, name, source[name])), name
            assert np.allclose(array, source[name], rtol=0, atol=2.0**-22), name
        else:
            assert np.array_equal(array, source[name]), name
        seen.add(name)
    assert seen == set(source)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_metadata_follows_the_converter(
    arch: str, tiny: Callable[[str], ResolvedModel], exported: Callable[[str, str], Path]
) -> None:
    model = tiny(arch)
    config = json.loads((model.path / "config.json").read_text())
    meta = read_metadata(exported(arch, "Q8_0"))
    assert meta["general.architecture"] == arch
    assert meta["general.type"] == "model"
    assert meta["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    assert meta["general.quantization_version"] == gguf.GGML_QUANT_VERSION
    assert meta[f"{arch}.block_count"] == 2
    assert meta[f"{arch}.embedding_length"] == 64
    ffn = config.get("intermediate_size") or config.get("n_inner") or 4 * config["n_embd"]
    assert meta[f"{arch}.feed_forward_length"] == ffn
    assert meta[f"{arch}.attention.head_count"] == 4
    positions = config.get("max_position_embeddings") or config["n_positions"]
    assert meta[f"{arch}.context_length"] == positions
    if arch == "gpt2":
        assert meta["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    else:
        assert meta[f"{arch}.attention.head_count_kv"] == config["num_key_value_heads"]
        rope = config["rope_parameters"]
        assert meta[f"{arch}.rope.freq_base"] == rope.get("full_attention", rope)["rope_theta"]
        assert meta[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(
            config["rms_norm_eps"]
        )
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == pre_tokenizer(model)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 49152
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert types[:17] == [int(gguf.TokenType.CONTROL)] * 17  # the special added tokens
    assert set(types[17:]) == {int(gguf.TokenType.NORMAL)}
    assert len(meta["tokenizer.ggml.merges"]) == 48900
    assert meta["tokenizer.ggml.bos_token_id"] == 1
    assert meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["tokenizer.ggml.unknown_token_id"] == 0
    assert meta["tokenizer.ggml.padding_token_id"] == 2
    assert meta["tokenizer.ggml.add_bos_token"] is False  # transformers adds none either
    assert meta["tokenizer.ggml.add_eos_token"] is False
    assert "<|im_start|>" in meta["tokenizer.chat_template"]


# The first architecture in the fast loop, the others ``slow`` (an export each).
@pytest.mark.parametrize("arch", [ARCHS[0], *(pytest.param(a, marks=pytest.mark.slow)
                                              for a in ARCHS[1:])])
def test_tied_embeddings_are_written_once(arch: str, exported: Callable[[str, str], Path]) -> None:
    types = tensor_types(exported(arch, "F32"))
    tied = tiny_builder.CONFIGS[arch]["tie_word_embeddings"]
    assert ("output.weight" in types) is not tied
    assert "token_embd.weight" in types
    if arch == "gpt2":
        assert "position_embd.weight" in types
        assert "blk.0.attn_qkv.weight" in types


# --------------------------------------------------------------------------- quantized


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_error_is_exactly_gguf_quants(
    arch: str,
    qtype: str,
    tiny: Callable[[str], ResolvedModel],
    exported: Callable[[str, str], Path],
) -> None:
    """Each tensor reads back as gguf.quants' quantize -> dequantize of the source."""
    model = tiny(arch)
    hp = names.hparams(json.loads((model.path / "config.json").read_text()))
    source = source_tensors(model)
    for name, array, stored in iter_hf_tensors(exported(arch, qtype), model.path):
        ggml = gguf.GGMLQuantizationType[stored]
        layout = names.to_gguf_layout(hp, name, source[name])
        expected = gguf.quants.dequantize(gguf.quants.quantize(layout, ggml), ggml)
        expected = names.to_hf_layout(hp, name, expected.reshape(layout.shape))
        assert np.array_equal(array, expected), f"{name} ({stored})"


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0", "Q4_1"])
@pytest.mark.parametrize("arch", ARCHS)
def test_which_tensors_are_quantized(
    arch: str, qtype: str, exported: Callable[[str, str], Path]
) -> None:
    types = tensor_types(exported(arch, qtype))
    for name, stored in types.items():
        if name.endswith((".bias", "_norm.weight")) or name == "position_embd.weight":
            assert stored == "F32", name  # 1-D, norms, biases, positions stay F32
        elif name == "output.weight" or (
            name == "token_embd.weight" and "output.weight" not in types
        ):
            # llama-quantize keeps the output projection at 8 bits under Q4_0/Q4_1
            assert stored == ("Q8_0" if qtype.startswith("Q4") else qtype), name
        else:
            assert stored == qtype, name


# --------------------------------------------------------------------------- transformers


def load_in_transformers(path: Path, config_from: Path | None = None) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    extra: dict[str, Any] = {}
    if config_from is not None:
        extra["config"] = AutoConfig.from_pretrained(config_from)
    return AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, **extra
    ).eval()


def greedy(model: Any, tokenizer: Any, prompt: str) -> list[int]:
    import torch

    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=32, do_sample=False, pad_token_id=2)
    return [int(t) for t in out[0].tolist()]


def assert_same_model(gguf_model: Any, source_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = AutoModelForCausalLM.from_pretrained(source_dir, dtype=torch.float32).eval()
    expected, actual = source.state_dict(), gguf_model.state_dict()
    assert set(expected) == set(actual)
    hp = names.hparams(names.read_config(source_dir))
    # Gemma's norms come back as float32(1 + w) - 1 (test_f32_export_reads_back_bit_exact)
    rounded = [k for k in expected if names.has_norm_offset(hp, k)]
    different = [k for k in expected if k not in rounded
                 and not torch.equal(expected[k], actual[k])]
    assert not different
    assert all(torch.allclose(expected[k], actual[k], rtol=0, atol=2.0**-22) for k in rounded)
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    for prompt in PROMPTS.values():
        assert greedy(gguf_model, tokenizer, prompt) == greedy(source, tokenizer, prompt)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch",
    [
        "llama",
        "qwen2",
        # transformers' GGUF loader rebuilds only GPT-2s of the standard shape
        # (n_positions 1024, n_inner 4 * n_embd): the tiny GPT-2 is built that way.
        "gpt2",
        "qwen3",
        "gemma3",
        "phi3",
    ],
)
def test_f32_export_reloads_in_transformers(
    arch: str, tiny: Callable[[str], ResolvedModel], exported: Callable[[str, str], Path]
) -> None:
    model = tiny(arch)
    assert_same_model(load_in_transformers(exported(arch, "F32")), model.path)


@pytest.mark.slow
def test_gpt2_export_reloads_in_transformers_given_its_config(
    tiny: Callable[[str], ResolvedModel], exported: Callable[[str, str], Path]
) -> None:
    """The tensors of the gpt2 export are right: with the source config, the loader
    (which transposes Conv1D weights back itself) rebuilds the identical model."""
    model = tiny("gpt2")
    assert_same_model(load_in_transformers(exported("gpt2", "F32"), model.path), model.path)


# --------------------------------------------------------------------------- bad input


def broken_copy(model: ResolvedModel, where: Path, **config_changes: Any) -> Path:
    target = where / "model"
    shutil.copytree(model.path, target)
    if config_changes:
        config_file = target / "config.json"
        config = json.loads(config_file.read_text())
        for key, value in config_changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        config_file.write_text(json.dumps(config))
    return target


def test_unknown_architecture(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    src = broken_copy(tiny("llama"), tmp_path, model_type="bert")
    with pytest.raises(GGUFExportError, match=r"config\.json: field 'model_type' = 'bert'"):
        export_gguf(src, tmp_path / "out.gguf", "F32")


def test_missing_config_key(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    src = broken_copy(tiny("llama"), tmp_path, num_attention_heads=None)
    with pytest.raises(GGUFExportError, match=r"config\.json: missing config key 'num_attention"):
        export_gguf(src, tmp_path / "out.gguf", "F32")


def test_unsupported_qtype(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    with pytest.raises(GGUFExportError, match="unsupported GGUF type 'Q6_K'"):
        export_gguf(tiny("llama").path, tmp_path / "out.gguf", "Q6_K")
    assert not list(tmp_path.iterdir())


def test_shape_mismatch(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    src = broken_copy(tiny("qwen2"), tmp_path, intermediate_size=256)
    with pytest.raises(
        GGUFExportError,
        match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.down_proj\.weight' has shape "
        r"\[64, 128\], but config\.json .* implies \[64, 256\]",
    ):
        export_gguf(src, tmp_path / "out.gguf", "F32")


def test_missing_tensor(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    src = broken_copy(tiny("llama"), tmp_path, num_hidden_layers=3)
    with pytest.raises(
        GGUFExportError, match=r"missing from the safetensors files: 'model\.layers\.2"
    ):
        export_gguf(src, tmp_path / "out.gguf", "F32")


def test_missing_tokenizer(tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    src = broken_copy(tiny("gpt2"), tmp_path)
    (src / "tokenizer.json").unlink()
    with pytest.raises(GGUFExportError, match=r"tokenizer\.json: missing"):
        export_gguf(src, tmp_path / "out.gguf", "Q8_0")


def test_failed_export_leaves_no_partial_file(
    tiny: Callable[[str], ResolvedModel], tmp_path: Path
) -> None:
    """A tensor that fails halfway through writing: the old file stays, no temp is left."""
    src = broken_copy(tiny("llama"), tmp_path)
    weights = load_file(str(src / "model.safetensors"))
    last = "model.norm.weight"  # written last; everything before it is already on disk
    weights[last] = weights[last].astype(np.int32)
    save_file(weights, str(src / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    with pytest.raises(GGUFExportError, match=r"tensor 'model\.norm\.weight' has dtype I32"):
        export_gguf(src, out, "F32")
    assert out.read_bytes() == b"previous"
    assert [p.name for p in out.parent.iterdir()] == ["model.gguf"]


# --------------------------------------------------------------------------- reader


@pytest.mark.slow
def test_reader_rejects_broken_files(exported: Callable[[str, str], Path], tmp_path: Path) -> None:
    good = exported("llama", "Q8_0")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(GGUFFormatError, match="truncated: tensor data ends at byte"):
        scan_gguf(truncated)
    with pytest.raises(GGUFFormatError, match="not a readable GGUF file"):
        read_metadata(truncated)
    text = tmp_path / "text.gguf"
    text.write_text("this is not a gguf file at all, just text")
    with pytest.raises(GGUFFormatError, match="not a GGUF file"):
        scan_gguf(text)
    with pytest.raises(GGUFFormatError, match="no such GGUF file"):
        read_metadata(tmp_path / "absent.gguf")


@pytest.mark.slow
def test_scan_agrees_with_gguf_reader(exported: Callable[[str, str], Path]) -> None:
    path = exported("qwen2", "Q4_1")
    scan = scan_gguf(path)
    reader = gguf.GGUFReader(path)
    assert scan.tensor_count == len(reader.tensors)
    assert scan.data_offset == reader.data_offset
    assert scan.data_end == path.stat().st_size
    for tensor in reader.tensors:
        scanned = scan.tensors[tensor.name]
        assert scanned.type == tensor.tensor_type.name
        assert scanned.dims == tuple(tensor.shape.tolist())
        assert scanned.nbytes == tensor.n_bytes
        assert scan.data_offset + scanned.offset == tensor.data_offset
    metadata = read_metadata(path)
    for key, value in scan.scalars.items():
        assert metadata[key] == (pytest.approx(value) if isinstance(value, float) else value)


def test_reader_needs_the_right_config(
    tiny: Callable[[str], ResolvedModel], exported: Callable[[str, str], Path]
) -> None:
    with pytest.raises(GGUFFormatError, match=r"general\.architecture is 'llama'"):
        next(iter_hf_tensors(exported("llama", "F32"), tiny("qwen2").path))


# --------------------------------------------------------------------------- llama.cpp's converter


@pytest.mark.slow
@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_tensor_bytes_match_llama_cpp_converter(
    outtype: str,
    llama_cpp_convert: Callable[[Path, str, Path], Path],
    tiny: Callable[[str], ResolvedModel],
    exported: Callable[[str, str], Path],
    tmp_path: Path,
) -> None:
    model = tiny("llama")
    theirs = llama_cpp_convert(model.path, outtype, tmp_path / f"theirs.{outtype}.gguf")
    ours = exported("llama", outtype.upper())
    a, b = scan_gguf(ours), scan_gguf(theirs)
    assert list(a.tensors.items()) == list(b.tensors.items())  # names, order, types, shapes
    with ours.open("rb") as fa, theirs.open("rb") as fb:
        fa.seek(a.data_offset)
        fb.seek(b.data_offset)
        assert fa.read() == fb.read()
    mine, their_meta = read_metadata(ours), read_metadata(theirs)
    for key in (
        "llama.block_count",
        "llama.context_length",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.rope.dimension_count",
        "general.file_type",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
        "tokenizer.ggml.add_bos_token",
    ):
        assert mine[key] == their_meta[key], key


# --------------------------------------------------------------------------- embedded model


@pytest.fixture(scope="module")
def embedded(gt_cache: Path) -> ResolvedModel:
    return resolve(BUILTIN["smollm2-135m"], gt_cache)


@pytest.mark.slow
def test_embedded_q4_1_maps_back_to_its_float32_directory(embedded: ResolvedModel) -> None:
    """llama.cpp's converter + quantizer wrote this file: the reader inverts it exactly."""
    assert embedded.gguf_file is not None
    source = source_tensors(embedded)
    types: dict[str, int] = {}
    for name, array, qtype in iter_hf_tensors(embedded.gguf_file, embedded.path):
        assert np.array_equal(array, source.pop(name)), name
        types[qtype] = types.get(qtype, 0) + 1
    assert not source
    assert types == {"Q4_1": 210, "F32": 61, "Q8_0": 1}


@pytest.mark.slow
def test_embedded_requantized_as_q4_1_reproduces_the_original(
    embedded: ResolvedModel, tmp_path: Path
) -> None:
    assert embedded.gguf_file is not None
    ours = tmp_path / "smollm2.Q4_1.gguf"
    export_gguf(embedded.path, ours, "q4_1", pre_tokenizer(embedded))
    a, b = scan_gguf(ours), scan_gguf(embedded.gguf_file)
    assert list(a.tensors.items()) == list(b.tensors.items())
    with ours.open("rb") as fa, embedded.gguf_file.open("rb") as fb:
        fa.seek(a.data_offset)
        fb.seek(b.data_offset)
        assert fa.read() == fb.read()


@pytest.mark.slow
def test_embedded_f32_export_reloads_in_transformers(
    embedded: ResolvedModel, tmp_path: Path
) -> None:
    out = tmp_path / "smollm2.F32.gguf"
    export_gguf(embedded.path, out, "F32", pre_tokenizer(embedded))
    assert_same_model(load_in_transformers(out), embedded.path)
