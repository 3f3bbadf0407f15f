"""Export a float32 Hugging Face safetensors directory as GGUF, the way llama.cpp does.

:func:`export_gguf` reads config.json, the ``model*.safetensors`` files (one tensor at a
time) and the tokenizer, and writes one GGUF file with ``gguf.GGUFWriter``:

* tensor order, names, layouts and the metadata keys follow
  ``convert_hf_to_gguf.py`` (llama-cpp-python 0.3.36's vendored copy): tensors in
  safetensors order (parts sorted, names sorted within a part), llama q/k permuted,
  gpt2 Conv1D weights transposed, tied embeddings written once (no ``output.weight``);
* which tensor gets which type follows the converter for F32/F16/BF16/Q8_0 (1-D
  tensors, norms, biases and ``position_embd`` stay F32; a tensor whose rows do not
  split into blocks falls back to F16) and ``llama-quantize`` for Q4_0/Q4_1, which the
  converter cannot write: there ``output.weight`` (or ``token_embd.weight`` when it is
  tied to the output) is Q8_0. llama-quantize picks Q6_K for that tensor when its rows
  are a multiple of 256 (GPT-2's 768): gguf's numpy quantizer has no Q6_K, so that
  case stays Q8_0 here (more precise, never less);
* quantization is gguf.quants' numpy implementation of ggml's reference kernels,
  which is bit-identical to llama.cpp's converter (F32, Q8_0 measured here) and to
  llama-quantize's Q4_0/Q4_1.

The file is written beside ``out`` and renamed into place (:func:`atomic_path`), so an
interrupted export never leaves a partial ``.gguf``. Bump :data:`EXPORTER_VERSION` on
any change to the bytes written: it is part of every artifact's cache key.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from pytest_groundtruth.core.atomic import atomic_path
from pytest_groundtruth.ggufio import names, tokenizer_meta
from pytest_groundtruth.ggufio.names import GGUFExportError, HParams

EXPORTER_VERSION = "1"

Q = gguf.GGMLQuantizationType
QTYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "F32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "Q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": (Q.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
}
# The project's quantization names (settings.QUANTIZATIONS) -> GGUF types.
ALIASES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int8": "Q8_0",
    "int4": "Q4_0",
    "q4_1": "Q4_1",
}


def canonical_qtype(qtype: str) -> str:
    """``"q8_0"``, ``"Q8_0"`` or ``"int8"`` -> ``"Q8_0"``; raises GGUFExportError otherwise."""
    key = qtype.strip()
    if key.lower() in ALIASES:
        return ALIASES[key.lower()]
    if key.upper() in QTYPES:
        return key.upper()
    raise GGUFExportError(
        f"unsupported GGUF type {qtype!r}: use one of {', '.join(QTYPES)} (or {', '.join(ALIASES)})"
    )


@dataclass(frozen=True)
class PlannedTensor:
    part: Path
    hf_name: str
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order, after the layout change
    dtype: str  # safetensors dtype of the source
    qtype: gguf.GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape) // block * size


def tensor_type(
    out: str, name: str, shape: tuple[int, ...], tied: bool
) -> gguf.GGMLQuantizationType:
    """The GGUF type of tensor ``name`` in an ``out`` export (see the module docstring)."""
    if (
        len(shape) <= 1
        or name.endswith("_norm.weight")
        or not name.endswith(".weight")
        or name == "position_embd.weight"
    ):
        return Q.F32
    qtype = QTYPES[out][0]
    if out in ("Q4_0", "Q4_1") and (
        name == "output.weight" or (tied and name == "token_embd.weight")
    ):
        qtype = Q.Q8_0
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        qtype = Q.F16  # the converter's fallback when gguf.quants raises QuantError
    return qtype


def model_parts(model_dir: Path) -> list[Path]:
    parts = sorted(p for p in model_dir.glob("model*.safetensors") if p.is_file())
    if not parts:
        raise GGUFExportError(f"{model_dir}: no model*.safetensors weights to export")
    return parts


def plan(model_dir: Path, hp: HParams, out: str) -> list[PlannedTensor]:
    """Every tensor to write, in the converter's order, with its GGUF name, shape and type."""
    from safetensors import safe_open

    found: list[tuple[Path, str, str, tuple[int, ...], str]] = []
    seen: dict[str, Path] = {}
    for part in model_parts(model_dir):
        try:
            handle = safe_open(str(part), framework="np")
        except Exception as exc:  # safetensors raises its own error type
            raise GGUFExportError(f"{part}: unreadable safetensors file ({exc})") from exc
        with handle as f:
            keys = f.keys()  # sorted by name, like the converter's SafetensorsLocal
            for hf in keys:
                if hf.endswith(names.SKIPPED_SUFFIXES):
                    continue
                if hf in seen:
                    raise GGUFExportError(f"{part}: tensor {hf!r} is also in {seen[hf].name}")
                seen[hf] = part
                if hf == "lm_head.weight" and hp.tied:
                    continue  # tied: transformers uses the embedding, so does the GGUF
                name = names.gguf_name(hp, hf)
                if name is None:
                    raise GGUFExportError(
                        f"{part}: tensor {hf!r} has no GGUF name for architecture "
                        f"{hp.model_type!r} ({hp.block_count} layers in config.json)"
                    )
                tensor_slice = f.get_slice(hf)
                shape = tuple(int(d) for d in tensor_slice.get_shape())
                expected = names.expected_hf_shape(hp, hf)
                if expected is not None and shape != expected:
                    raise GGUFExportError(
                        f"{part}: tensor {hf!r} has shape {list(shape)}, but config.json "
                        f"({hp.source}) implies {list(expected)}"
                    )
                found.append(
                    (part, hf, name, names.gguf_shape(hp, hf, shape), str(tensor_slice.get_dtype()))
                )
    missing = [n for n in names.required_hf_tensors(hp) if n not in seen]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise GGUFExportError(
            f"{model_dir}: {len(missing)} tensor(s) that a {hp.model_type} model with "
            f"{hp.block_count} layers needs are missing from the safetensors files: {shown}"
        )
    tied = not any(name == "output.weight" for _, _, name, _, _ in found)
    return [
        PlannedTensor(part, hf, name, shape, dtype, tensor_type(out, name, shape, tied))
        for part, hf, name, shape, dtype in found
    ]


class _Reader:
    """Open safetensors files one at a time; load one tensor as float32."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._part: Path | None = None
        self._np: Any = None
        self._pt: Any = None

    def load(self, item: PlannedTensor) -> np.ndarray[Any, np.dtype[np.float32]]:
        from safetensors import safe_open

        if item.part != self._part:
            self._stack.close()
            self._part, self._pt = item.part, None
            self._np = self._stack.enter_context(safe_open(str(item.part), framework="np"))
        if item.dtype in ("F32", "F16", "F64"):
            data = self._np.get_tensor(item.hf_name)
        elif item.dtype == "BF16":  # numpy has no bfloat16: widen through torch
            if self._pt is None:
                self._pt = self._stack.enter_context(safe_open(str(item.part), framework="pt"))
            data = self._pt.get_tensor(item.hf_name).float().numpy()
        else:
            raise GGUFExportError(
                f"{item.part}: tensor {item.hf_name!r} has dtype {item.dtype}; "
                "only floating-point weights are exported"
            )
        return np.ascontiguousarray(data, dtype=np.float32)

    def close(self) -> None:
        self._stack.close()


def model_name(model_dir: Path, config: Mapping[str, Any]) -> str:
    """``general.name``: the hub id the config names, else the directory's name."""
    for key in ("_name_or_path", "_model_name_or_path"):
        value = config.get(key)
        if (
            isinstance(value, str)
            and value
            and value.count("/") <= 1
            and not value.startswith(("/", ".", "~"))
        ):
            return value
    return model_dir.resolve().name


def _opt(config: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((config[k] for k in keys if config.get(k) is not None), None)


def _required_float(config: Mapping[str, Any], keys: tuple[str, ...], source: str) -> float:
    value = _opt(config, keys)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise GGUFExportError(
            f"{source}: missing or non-numeric config key {' or '.join(repr(k) for k in keys)}"
        )
    return float(value)


def add_hparams(writer: gguf.GGUFWriter, hp: HParams, file_type: gguf.LlamaFileType) -> None:
    """``set_gguf_parameters`` of the converter's LlamaModel / Qwen2Model / GPT2Model."""
    config, source = hp.config, hp.source
    writer.add_block_count(hp.block_count)
    if hp.model_type == "gpt2":
        n_ctx = _opt(config, ("n_ctx", "n_positions"))
        if not isinstance(n_ctx, int):
            raise GGUFExportError(f"{source}: missing config key 'n_ctx' or 'n_positions'")
        writer.add_context_length(n_ctx)
        writer.add_embedding_length(hp.n_embd)
        # The converter writes 4 * n_embd; GPT-2 configs may set n_inner (the tiny model
        # does), and llama.cpp sizes ffn_up from this key, so write the real width.
        writer.add_feed_forward_length(hp.n_ff)
        writer.add_head_count(hp.n_head)
        writer.add_layer_norm_eps(_required_float(config, ("layer_norm_epsilon",), source))
        writer.add_file_type(file_type)
        return

    n_ctx = _opt(
        config,
        (
            "max_position_embeddings",
            "n_ctx",
            "n_positions",
            "max_length",
            "max_sequence_length",
            "model_max_length",
        ),
    )
    if n_ctx is not None:
        writer.add_context_length(int(n_ctx))
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_head_count(hp.n_head)
    if config.get("num_key_value_heads") is not None:
        writer.add_head_count_kv(hp.n_head_kv)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise GGUFExportError(f"{source}: field 'rope_parameters' is not an object")
    rope = rope.get("full_attention", rope)
    rope_type = rope.get("rope_type", rope.get("type"))
    if rope_type == "linear" and rope.get("factor") is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type not in (None, "default"):
        raise GGUFExportError(
            f"{source}: rope scaling type {rope_type!r} is not supported by this exporter "
            "(supported: default, linear)"
        )
    theta = rope.get("rope_theta", config.get("rope_theta"))
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(_required_float(config, ("rms_norm_eps", "norm_eps"), source))
    layer_norm_eps = _opt(config, ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))
    if layer_norm_eps is not None:
        writer.add_layer_norm_eps(float(layer_norm_eps))
    if config.get("head_dim") is not None:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    writer.add_file_type(file_type)
    if hp.model_type == "llama":
        writer.add_vocab_size(hp.vocab_size)
        writer.add_rope_dimension_count(hp.head_dim)


def export_gguf(model_dir: Path, out: Path, qtype: str, tokenizer_pre: str = "default") -> None:
    """Write the float32 HF model in ``model_dir`` as a ``qtype`` GGUF file at ``out``.

    ``qtype``: F32, F16, BF16, Q8_0, Q4_0 or Q4_1 (any case), or float32, float16,
    bfloat16, int8 (Q8_0), int4 (Q4_0), q4_1. ``tokenizer_pre`` becomes
    ``tokenizer.ggml.pre`` (llama.cpp's pre-tokenizer name, e.g. ``smollm``).
    Raises :class:`GGUFExportError` naming the file and field on bad input.
    """
    model_dir, out = Path(model_dir), Path(out)
    kind = canonical_qtype(qtype)
    config_file = model_dir / "config.json"
    config = names.read_config(model_dir)
    hp = names.hparams(config, str(config_file))
    tensors = plan(model_dir, hp, kind)
    meta = tokenizer_meta.load(model_dir, hp.config, hp.vocab_size, tokenizer_pre, hp.model_type)

    writer = gguf.GGUFWriter(path=None, arch=hp.arch_name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_name(model_dir, config))
    add_hparams(writer, hp, QTYPES[kind][1])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    meta.add_to(writer)
    for item in tensors:
        writer.add_tensor_info(
            item.name, item.shape, np.dtype(np.float32), item.nbytes, raw_dtype=item.qtype
        )

    reader = _Reader()
    with atomic_path(out) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for item, data in zip(tensors, _encoded(tensors, reader, hp), strict=True):
                if data.nbytes != item.nbytes:  # pragma: no cover - guarded by plan()
                    raise GGUFExportError(
                        f"{item.part}: {item.hf_name!r} encoded to "
                        f"{data.nbytes} bytes, planned {item.nbytes}"
                    )
                writer.write_tensor_data(data)
        finally:
            writer.close()
            reader.close()


def _encoded(
    tensors: list[PlannedTensor], reader: _Reader, hp: HParams
) -> Iterator[np.ndarray[Any, Any]]:
    for item in tensors:
        data = names.to_gguf_layout(hp, item.hf_name, reader.load(item))
        yield gguf.quants.quantize(data, item.qtype)
