"""Export a float32 Hugging Face safetensors directory as GGUF, the way llama.cpp does.

:func:`export_gguf` reads config.json, the ``model*.safetensors`` files (one tensor at a
time) and the tokenizer, and writes one GGUF file with ``gguf.GGUFWriter``:

* tensor order, names, layouts and the metadata keys follow
  ``convert_hf_to_gguf.py`` (llama-cpp-python 0.3.36's vendored copy) for the
  architectures of :data:`~pytest_groundtruth.ggufio.names.EXPORTED` (llama, qwen2,
  qwen3, gpt2, gemma3, phi3): tensors in safetensors order (parts sorted, names sorted
  within a part), the per-architecture layout rules of
  :data:`~pytest_groundtruth.ggufio.names.LAYOUTS` (llama q/k permuted, gpt2 Conv1D
  weights transposed, gemma norms stored as ``1 + w``), tied embeddings written once (no
  ``output.weight``); which tensors the model must have, and their shapes, are what
  transformers builds from the config (:func:`~pytest_groundtruth.ggufio.names.skeleton`);
* which tensor gets which type follows the converter for F32/F16/BF16/Q8_0 (1-D
  tensors, norms, biases and ``position_embd`` stay F32; a tensor whose rows do not
  split into blocks falls back to F16) and ``llama-quantize`` for Q4_0/Q4_1, which the
  converter cannot write: there ``output.weight`` (or ``token_embd.weight`` when it is
  tied to the output) is Q8_0. llama-quantize picks Q6_K for that tensor when its rows
  are a multiple of 256 (GPT-2's 768): gguf's numpy quantizer has no Q6_K, so that
  case stays Q8_0 here (more precise, never less); the K-quant and i-quant mixes are
  llama.cpp's quantizer's job (:mod:`~pytest_groundtruth.ggufio.quantize`);
* ``like=FILE`` instead takes every tensor's type (and ``general.file_type``) from
  another GGUF of the same model, so that a mixed file (a K-quant mix, token embeddings
  at Q4_0) is written back with each tensor's own type: that is the roundtrip's
  reimport. Where ``like``'s bytes decode to exactly the values being written they are
  a correct encoding of them and are kept (the K-quant and i-quant encoders search
  scales, so encoding decoded values again can move them); otherwise the tensor is
  encoded afresh;
* quantization is gguf.quants' numpy implementation of ggml's reference kernels,
  which is bit-identical to llama.cpp's converter (F32, Q8_0 measured here) and to
  llama-quantize's Q4_0/Q4_1; types it lacks (K-quants, i-quants) are encoded by the
  libggml llama-cpp-python ships (:mod:`~pytest_groundtruth.ggufio.ggml_encoder`).

The file is written beside ``out`` and renamed into place (:func:`atomic_path`), so an
interrupted export never leaves a partial ``.gguf``. Bump :data:`EXPORTER_VERSION` on
any change to the bytes written: it is part of every artifact's cache key.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from pytest_groundtruth.core.atomic import atomic_path
from pytest_groundtruth.core.tensorfiles import open_safetensors
from pytest_groundtruth.ggufio import ggml_encoder, names, tokenizer_meta
from pytest_groundtruth.ggufio.names import GGUFExportError, HParams
from pytest_groundtruth.ggufio.quants import GGUF_TYPES
from pytest_groundtruth.ggufio.reader import GGUFScan, scan_gguf

EXPORTER_VERSION = "2"

Q = gguf.GGMLQuantizationType
QTYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "F32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "Q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": (Q.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
}
# The project's quantization names -> GGUF types: the catalogue's.
ALIASES = GGUF_TYPES


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


def plan(model_dir: Path, hp: HParams, out: str,
         like: GGUFScan | None = None) -> list[PlannedTensor]:
    """Every tensor to write, in the converter's order, with its GGUF name, shape and type
    (``like``: take each tensor's type from that file)."""

    required = names.required_hf_tensors(hp)
    found: list[tuple[Path, str, str, tuple[int, ...], str]] = []
    seen: dict[str, Path] = {}
    for part in model_parts(model_dir):
        try:
            handle = open_safetensors(str(part), "np")
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
                if hf == names.OUTPUT and hp.tied:
                    continue  # tied: transformers uses the embedding, so does the GGUF
                name = names.gguf_name(hp, hf)
                if name is None:
                    raise GGUFExportError(
                        f"{part}: tensor {hf!r} has no GGUF name for architecture "
                        f"{hp.model_type!r} ({hp.block_count} layers in config.json)"
                    )
                tensor_slice = f.get_slice(hf)
                shape = tuple(int(d) for d in tensor_slice.get_shape())
                expected = required.get(hf)
                if expected is not None and shape != expected:
                    raise GGUFExportError(
                        f"{part}: tensor {hf!r} has shape {list(shape)}, but config.json "
                        f"({hp.source}) implies {list(expected)}"
                    )
                found.append(
                    (part, hf, name, names.gguf_shape(hp, hf, shape), str(tensor_slice.get_dtype()))
                )
    missing = [n for n in required if n not in seen]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise GGUFExportError(
            f"{model_dir}: {len(missing)} tensor(s) that a {hp.model_type} model with "
            f"{hp.block_count} layers needs are missing from the safetensors files: {shown}"
        )
    tied = not any(name == "output.weight" for _, _, name, _, _ in found)
    planned = []
    for part, hf, name, shape, dtype in found:
        qtype = tensor_type(out, name, shape, tied)
        if like is not None:
            if name not in like.tensors:
                raise GGUFExportError(f"{model_dir}: tensor {name!r} ({hf}) is not in the "
                                      "GGUF whose tensor types the export follows")
            qtype = gguf.GGMLQuantizationType[like.tensors[name].type]
        planned.append(PlannedTensor(part, hf, name, shape, dtype, qtype))
    return planned


class _Reader:
    """Open safetensors files one at a time; load one tensor as float32."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._part: Path | None = None
        self._np: Any = None
        self._pt: Any = None

    def load(self, item: PlannedTensor) -> np.ndarray[Any, np.dtype[np.float32]]:

        if item.part != self._part:
            self._stack.close()
            self._part, self._pt = item.part, None
            self._np = self._stack.enter_context(open_safetensors(str(item.part), "np"))
        if item.dtype in ("F32", "F16", "F64"):
            data = self._np.get_tensor(item.hf_name)
        elif item.dtype == "BF16":  # numpy has no bfloat16: widen through torch
            if self._pt is None:
                self._pt = self._stack.enter_context(open_safetensors(str(item.part), "pt"))
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


def _rope_parameters(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise GGUFExportError(f"{source}: field 'rope_parameters' is not an object")
    return rope


def add_hparams(writer: gguf.GGUFWriter, hp: HParams, file_type: int) -> None:
    """``set_gguf_parameters`` of the converter's model class for ``hp``'s architecture
    (LlamaModel, Qwen2Model, Qwen3Model, GPT2Model, Gemma3Model, Phi3MiniModel)."""
    if hp.model_type == "gpt2":
        _gpt2_hparams(writer, hp, file_type)
    elif hp.model_type == "phi3":
        _phi3_hparams(writer, hp, file_type)
    else:
        _text_hparams(writer, hp, file_type)


def _gpt2_hparams(writer: gguf.GGUFWriter, hp: HParams, file_type: int) -> None:
    config, source = hp.config, hp.source
    writer.add_block_count(hp.block_count)
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


def _phi3_hparams(writer: gguf.GGUFWriter, hp: HParams, file_type: int) -> None:
    """Phi3MiniModel.set_gguf_parameters (no long-RoPE factors: those need llama.cpp's
    own converter, which writes them as extra tensors)."""
    config, source = hp.config, hp.source
    rope = _rope_parameters(config, source)
    if rope.get("long_factor") or rope.get("short_factor"):
        raise GGUFExportError(f"{source}: phi3 long-RoPE factors are not written by this "
                              "exporter; use llama.cpp's converter (converter = \"llama.cpp\")")
    n_ctx = _opt(config, ("n_positions", "max_position_embeddings"))
    original = rope.get("original_max_position_embeddings",
                        config.get("original_max_position_embeddings"))
    if not isinstance(n_ctx, int) or not isinstance(original, int):
        raise GGUFExportError(f"{source}: phi3 needs 'max_position_embeddings' and "
                              "'original_max_position_embeddings'")
    theta = rope.get("rope_theta", config.get("rope_theta"))
    if theta is None:
        raise GGUFExportError(f"{source}: missing config key 'rope_theta'")
    partial = float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)))
    writer.add_context_length(n_ctx)
    writer.add_rope_scaling_orig_ctx_len(original)
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_block_count(hp.block_count)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_layer_norm_rms_eps(_required_float(config, ("rms_norm_eps",), source))
    writer.add_rope_dimension_count(int(partial * hp.n_embd) // hp.n_head)
    writer.add_rope_freq_base(float(theta))
    writer.add_file_type(file_type)
    window = config.get("sliding_window")
    writer.add_sliding_window(window if isinstance(window, int) else 0)


def _text_hparams(writer: gguf.GGUFWriter, hp: HParams, file_type: int) -> None:
    """TextModel.set_gguf_parameters and the overrides of llama, qwen2/3 and gemma3."""
    config, source = hp.config, hp.source
    gemma3 = hp.model_type == "gemma3_text"
    writer.add_block_count(hp.block_count)
    n_ctx = _opt(
        config,
        ("max_position_embeddings", "n_ctx", "n_positions", "max_length",
         "max_sequence_length", "model_max_length"),
    )
    if n_ctx is None and gemma3:
        n_ctx = 131072  # Gemma3Model's default
    if n_ctx is not None:
        writer.add_context_length(int(n_ctx))
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_head_count(hp.n_head)
    if config.get("num_key_value_heads") is not None or gemma3:
        writer.add_head_count_kv(hp.n_head_kv)
    rope_all = _rope_parameters(config, source)
    rope = rope_all.get("full_attention", rope_all)
    rope_type = rope.get("rope_type", rope.get("type"))
    if rope_type == "linear" and rope.get("factor") is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type not in (None, "default"):
        raise GGUFExportError(
            f"{source}: rope scaling type {rope_type!r} is not supported by this exporter "
            "(supported: default, linear); llama.cpp's converter may support it "
            "(converter = \"llama.cpp\")"
        )
    theta = rope.get("rope_theta", config.get("rope_theta"))
    if theta is None and gemma3:
        theta = 1_000_000.0
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    local = rope_all.get("sliding_attention", {})
    if isinstance(local, dict) and local.get("rope_theta") is not None:
        writer.add_rope_freq_base_swa(float(local["rope_theta"]))
    writer.add_layer_norm_rms_eps(_required_float(config, ("rms_norm_eps", "norm_eps"), source))
    layer_norm_eps = _opt(config, ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))
    if layer_norm_eps is not None:
        writer.add_layer_norm_eps(float(layer_norm_eps))
    if config.get("head_dim") is not None or gemma3:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    writer.add_file_type(file_type)
    if hp.model_type == "llama":
        writer.add_vocab_size(hp.vocab_size)
        writer.add_rope_dimension_count(hp.head_dim)
    if gemma3:
        if config.get("attn_logit_softcapping") is not None:
            raise GGUFExportError(f"{source}: gemma3 has no attention logit softcapping "
                                  "(the converter refuses it too)")
        softcap = config.get("final_logit_softcapping")
        if softcap:
            writer.add_final_logit_softcapping(float(softcap))
        if config.get("sliding_window_pattern") != 1:
            window = config.get("sliding_window")
            if not isinstance(window, int):
                raise GGUFExportError(f"{source}: gemma3 needs 'sliding_window'")
            writer.add_sliding_window(window)


def export_gguf(model_dir: Path, out: Path, qtype: str, tokenizer_pre: str = "default",
                like: Path | None = None) -> str:
    """Write the float32 HF model in ``model_dir`` as a ``qtype`` GGUF file at ``out``.

    ``qtype``: F32, F16, BF16, Q8_0, Q4_0 or Q4_1 (any case), or float32, float16,
    bfloat16, int8 (Q8_0), int4 (Q4_0), q4_1. ``tokenizer_pre`` becomes
    ``tokenizer.ggml.pre`` (llama.cpp's pre-tokenizer name, e.g. ``smollm``).
    ``like``: a GGUF of the same model whose per-tensor types (and file type) to keep,
    any type ggml can encode; ``qtype`` is then only its label.
    Raises :class:`GGUFExportError` naming the file and field on bad input. Returns what
    was done with ``like``'s encodings (empty without ``like``).
    """
    model_dir, out = Path(model_dir), Path(out)
    kind = canonical_qtype(qtype) if like is None else qtype
    config_file = model_dir / "config.json"
    config = names.read_config(model_dir)
    hp = names.hparams(config, str(config_file))
    if not hp.layout.exported:
        raise GGUFExportError(
            f"{config_file}: field 'model_type' = {hp.model_type!r}: this exporter writes "
            f"{', '.join(names.EXPORTED)}; llama.cpp's converter knows more "
            "(converter = \"llama.cpp\" or \"auto\" in the runtime's options)"
        )
    scan = scan_gguf(like) if like is not None else None
    tensors = plan(model_dir, hp, kind if like is None else "F32", scan)
    meta = tokenizer_meta.load(model_dir, hp.config, hp.vocab_size, tokenizer_pre, hp.model_type)
    if scan is not None:
        file_type = scan.scalars.get("general.file_type")
        if not isinstance(file_type, int):
            raise GGUFExportError(f"{like}: no general.file_type")
    else:
        file_type = int(QTYPES[kind][1])

    writer = gguf.GGUFWriter(path=None, arch=hp.arch_name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_name(model_dir, config))
    add_hparams(writer, hp, file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    meta.add_to(writer)
    for item in tensors:
        writer.add_tensor_info(
            item.name, item.shape, np.dtype(np.float32), item.nbytes, raw_dtype=item.qtype
        )

    reader = _Reader()
    encoder = _Encoder(like, scan)
    with atomic_path(out) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for item in tensors:
                data = encoder.encode(item, names.to_gguf_layout(hp, item.hf_name,
                                                                 reader.load(item)))
                if data.nbytes != item.nbytes:  # pragma: no cover - guarded by plan()
                    raise GGUFExportError(
                        f"{item.part}: {item.hf_name!r} encoded to "
                        f"{data.nbytes} bytes, planned {item.nbytes}"
                    )
                writer.write_tensor_data(data)
        finally:
            writer.close()
            reader.close()
            encoder.close()
    return encoder.summary()


def encode(data: np.ndarray[Any, np.dtype[np.float32]], qtype: gguf.GGMLQuantizationType
           ) -> np.ndarray[Any, Any]:
    """``data`` as ``qtype``: gguf.quants where it can, else ggml's own encoder."""
    try:
        return gguf.quants.quantize(data, qtype)
    except NotImplementedError:
        reason = ggml_encoder.available(qtype.name)
        if reason is not None:
            raise GGUFExportError(f"cannot encode {qtype.name}: {reason}") from None
        return ggml_encoder.encode(data.reshape(-1, data.shape[-1]), qtype.name)


class _Encoder:
    """Encode planned tensors; with a ``like`` file, keep its bytes where they decode to
    exactly the values at hand (a correct encoding of them)."""

    def __init__(self, like: Path | None, scan: GGUFScan | None) -> None:
        self.scan = scan
        self.mapped = None if like is None else np.memmap(like, dtype=np.uint8, mode="r")
        self.kept = 0
        self.encoded = 0

    def encode(self, item: PlannedTensor, data: np.ndarray[Any, np.dtype[np.float32]]
               ) -> np.ndarray[Any, Any]:
        if self.scan is not None and self.mapped is not None and item.qtype not in (
                Q.F32, Q.F16, Q.BF16):
            info = self.scan.tensors[item.name]
            start = self.scan.data_offset + info.offset
            raw = np.asarray(self.mapped[start:start + info.nbytes])
            byte_shape = gguf.quants.quant_shape_to_byte_shape(item.shape, item.qtype)
            if raw.size == math.prod(byte_shape):
                try:
                    decoded = gguf.quants.dequantize(raw.reshape(byte_shape), item.qtype)
                except NotImplementedError:
                    decoded = None
                if decoded is not None and np.array_equal(
                        np.asarray(decoded, dtype=np.float32).reshape(data.shape), data):
                    self.kept += 1
                    return np.array(raw).reshape(byte_shape)
        self.encoded += 1
        return encode(data, item.qtype)

    def summary(self) -> str:
        if self.scan is None:
            return ""
        return (f"{self.kept} tensor(s) kept the other file's encoding (decoded to exactly "
                f"these values), {self.encoded} encoded here")

    def close(self) -> None:
        self.mapped = None
