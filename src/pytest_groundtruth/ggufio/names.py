"""Hugging Face <-> GGUF: tensor names, layouts and the hyperparameters both need.

The forward direction (HF name -> GGUF name) goes through ``gguf``'s own
:class:`gguf.TensorNameMap`, the table llama.cpp's converter uses. The backward
direction (GGUF name -> HF name) uses the per-architecture tables below, which list
the names transformers gives these tensors; :func:`check_tables` proves that the two
agree (a unit test runs it), so a name maps back to exactly the name it came from.

Layout changes follow ``convert_hf_to_gguf.py``:

* llama: the rows of ``q_proj`` and ``k_proj`` (weights and biases) are permuted from
  HF's "rotate half" RoPE layout to llama.cpp's interleaved one (:func:`permute`);
  qwen2 uses NEOX-style RoPE in llama.cpp and is not permuted.
* gpt2: HF stores ``c_attn``, ``c_proj`` and ``c_fc`` as ``Conv1D`` (``[in, out]``);
  GGUF wants linear layout (``[out, in]``), so these weights are transposed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt


class GGUFExportError(ValueError):
    """The model directory cannot be exported; the message names the file and the field."""


class GGUFFormatError(ValueError):
    """A GGUF file cannot be read back as the model it claims to be."""


ARCHITECTURES: dict[str, gguf.MODEL_ARCH] = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "gpt2": gguf.MODEL_ARCH.GPT2,
}

# transformers' name -> llama.cpp's name, outside the blocks.
_LLAMA_GLOBAL = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}
# ... and inside block N (HF prefix model.layers.N., GGUF prefix blk.N.).
_LLAMA_BLOCK = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GPT2_GLOBAL = {
    "transformer.wte": "token_embd",
    "transformer.wpe": "position_embd",
    "transformer.ln_f": "output_norm",
    "lm_head": "output",
}
_GPT2_BLOCK = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
_TABLES: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "llama": ("model.layers", _LLAMA_GLOBAL, _LLAMA_BLOCK),
    "qwen2": ("model.layers", _LLAMA_GLOBAL, _LLAMA_BLOCK),
    "gpt2": ("transformer.h", _GPT2_GLOBAL, _GPT2_BLOCK),
}
# HF Conv1D modules of GPT-2 (stored [in, out]; GGUF and nn.Linear use [out, in]).
_GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
# Buffers some checkpoints carry that are not weights (the converter drops them too).
SKIPPED_SUFFIXES = (
    ".attn.bias",
    ".attn.masked_bias",
    ".attention.masked_bias",
    ".attention.bias",
    ".rotary_emb.inv_freq",
)
# GGUF tensors llama.cpp's converter generates that have no HF counterpart.
GENERATED_GGUF_TENSORS = ("rope_freqs.weight",)
# transformers' defaults for `tie_word_embeddings` when config.json omits it.
_TIE_DEFAULT = {"llama": False, "qwen2": False, "gpt2": True}


# --------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class HParams:
    """The shape of a model as config.json states it (only what GGUF export needs)."""

    model_type: str
    block_count: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    vocab_size: int
    head_dim: int
    tied: bool
    config: Mapping[str, Any]
    source: str  # where the config came from, for error messages

    @property
    def arch(self) -> gguf.MODEL_ARCH:
        return ARCHITECTURES[self.model_type]

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]


def read_config(path: Path) -> dict[str, Any]:
    """config.json of a model directory (or the file itself) as a dict."""
    file = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GGUFExportError(f"{file}: cannot read the model config ({exc})") from exc
    if not isinstance(data, dict):
        raise GGUFExportError(f"{file}: the model config is not a JSON object")
    return data


def _find(
    config: Mapping[str, Any], keys: tuple[str, ...], source: str, *, kind: type = int
) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            if kind is int and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0
            ):
                raise GGUFExportError(
                    f"{source}: field {key!r} = {value!r} must be a positive integer"
                )
            return value
    raise GGUFExportError(
        f"{source}: missing config key {' or '.join(repr(k) for k in keys)} "
        f"(needed for model_type {config.get('model_type')!r})"
    )


def hparams(config: Mapping[str, Any], source: str = "config.json") -> HParams:
    """Validate ``config`` (a parsed config.json) for GGUF export/import."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise GGUFExportError(
            f"{source}: field 'model_type' = {model_type!r} is not a supported architecture "
            f"(supported: {', '.join(ARCHITECTURES)})"
        )
    if "text_config" in config:  # multimodal wrappers keep the LM config nested
        config = {**config, **config["text_config"]}
    block_count = _find(config, ("num_hidden_layers", "n_layer"), source)
    n_embd = _find(config, ("hidden_size", "n_embd"), source)
    n_head = _find(config, ("num_attention_heads", "n_head"), source)
    if model_type == "gpt2":
        n_head_kv = n_head
        n_inner = config.get("n_inner")
        n_ff = n_inner if isinstance(n_inner, int) and n_inner > 0 else 4 * n_embd
    else:
        n_head_kv = config.get("num_key_value_heads") or n_head
        n_ff = _find(config, ("intermediate_size",), source)
    vocab_size = _find(config, ("vocab_size",), source)
    head_dim = config.get("head_dim") or n_embd // n_head
    if model_type != "gpt2" and config.get("head_dim") is None and n_embd % n_head:
        raise GGUFExportError(
            f"{source}: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}"
        )
    if n_head % n_head_kv:
        raise GGUFExportError(
            f"{source}: num_attention_heads {n_head} is not a multiple of "
            f"num_key_value_heads {n_head_kv}"
        )
    tied = config.get("tie_word_embeddings")
    if not isinstance(tied, bool):
        tied = _TIE_DEFAULT[model_type]
    return HParams(
        model_type=model_type,
        block_count=block_count,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=n_ff,
        vocab_size=vocab_size,
        head_dim=head_dim,
        tied=tied,
        config=config,
        source=source,
    )


# --------------------------------------------------------------------------- names


def gguf_name(hp: HParams, hf_name: str) -> str | None:
    """llama.cpp's name for HF tensor ``hf_name`` (via gguf.TensorNameMap), or None."""
    mapped: str | None = _name_map(hp.arch, hp.block_count).get_name(
        hf_name, try_suffixes=(".weight", ".bias")
    )
    return mapped


_NAME_MAPS: dict[tuple[gguf.MODEL_ARCH, int], gguf.TensorNameMap] = {}


def _name_map(arch: gguf.MODEL_ARCH, block_count: int) -> gguf.TensorNameMap:
    key = (arch, block_count)
    if key not in _NAME_MAPS:
        _NAME_MAPS[key] = gguf.get_tensor_name_map(arch, block_count)
    return _NAME_MAPS[key]


def hf_name(hp: HParams, gguf_tensor: str) -> str | None:
    """The transformers name of GGUF tensor ``gguf_tensor``, or None when it has none."""
    block_prefix, global_table, block_table = _TABLES[hp.model_type]
    stem, dot, suffix = gguf_tensor.rpartition(".")
    if not dot or suffix not in ("weight", "bias"):
        return None
    if stem.startswith("blk."):
        _, bid, part = stem.split(".", 2) if stem.count(".") >= 2 else (stem, "", "")
        if not bid.isdecimal() or int(bid) >= hp.block_count:
            return None
        inverse = {v: k for k, v in block_table.items()}
        if part not in inverse:
            return None
        return f"{block_prefix}.{int(bid)}.{inverse[part]}.{suffix}"
    inverse = {v: k for k, v in global_table.items()}
    return f"{inverse[stem]}.{suffix}" if stem in inverse else None


def hf_templates(hp: HParams) -> list[str]:
    """Every HF weight name this architecture can have (weights and biases)."""
    block_prefix, global_table, block_table = _TABLES[hp.model_type]
    names = [f"{hf}.{s}" for hf in global_table for s in ("weight", "bias")]
    for bid in range(hp.block_count):
        names += [
            f"{block_prefix}.{bid}.{hf}.{s}" for hf in block_table for s in ("weight", "bias")
        ]
    return names


def check_tables(hp: HParams) -> None:
    """Assert that gguf.TensorNameMap and the backward tables agree on every name."""
    for name in hf_templates(hp):
        forward = gguf_name(hp, name)
        if forward is None:
            raise AssertionError(f"{hp.model_type}: gguf.TensorNameMap has no name for {name!r}")
        back = hf_name(hp, forward)
        if back != name:
            raise AssertionError(f"{hp.model_type}: {name!r} -> {forward!r} -> {back!r}")


def required_hf_tensors(hp: HParams) -> list[str]:
    """The HF tensors an export cannot do without (weights; biases where the arch has them)."""
    block_prefix, global_table, block_table = _TABLES[hp.model_type]
    names = [f"{hf}.weight" for hf in global_table if hf != "lm_head" or not hp.tied]
    for bid in range(hp.block_count):
        names += [f"{block_prefix}.{bid}.{hf}.weight" for hf in block_table]
        if hp.model_type == "gpt2":
            names += [f"{block_prefix}.{bid}.{hf}.bias" for hf in block_table]
        elif hp.model_type == "qwen2":
            names += [f"{block_prefix}.{bid}.self_attn.{p}_proj.bias" for p in "qkv"]
    if hp.model_type == "gpt2":
        names.append("transformer.ln_f.bias")
    return names


# --------------------------------------------------------------------------- shapes


def expected_hf_shape(hp: HParams, name: str) -> tuple[int, ...] | None:
    """The HF shape of tensor ``name`` implied by the config, or None when unconstrained."""
    e, v, f = hp.n_embd, hp.vocab_size, hp.n_ff
    q, kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    stem, _, suffix = name.rpartition(".")
    part = stem.split(".", 3)[-1] if stem.startswith(("model.layers.", "transformer.h.")) else stem
    if hp.model_type == "gpt2":
        shapes = {
            "transformer.wte": (v, e),
            "lm_head": (v, e),
            "transformer.ln_f": (e,),
            "ln_1": (e,),
            "ln_2": (e,),
            "attn.c_attn": (e, 3 * e),
            "attn.c_proj": (e, e),
            "mlp.c_fc": (e, f),
            "mlp.c_proj": (f, e),
        }
        if part == "transformer.wpe":
            return None  # n_positions is checked through context length, not here
    else:
        shapes = {
            "model.embed_tokens": (v, e),
            "lm_head": (v, e),
            "model.norm": (e,),
            "input_layernorm": (e,),
            "post_attention_layernorm": (e,),
            "self_attn.q_proj": (q, e),
            "self_attn.k_proj": (kv, e),
            "self_attn.v_proj": (kv, e),
            "self_attn.o_proj": (e, q),
            "mlp.gate_proj": (f, e),
            "mlp.up_proj": (f, e),
            "mlp.down_proj": (e, f),
        }
    shape = shapes.get(part)
    if shape is None:
        return None
    if suffix == "bias":
        # Conv1D biases have the output size (last dim); linear biases the first.
        return (shape[-1],) if hp.model_type == "gpt2" else (shape[0],)
    return shape


# --------------------------------------------------------------------------- layouts


FloatArray = npt.NDArray[np.float32]


def permute(w: FloatArray, n_head: int, n_head_kv: int | None) -> FloatArray:
    """llama.cpp's q/k row permutation (``LlamaModel.permute`` in convert_hf_to_gguf.py)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise GGUFExportError(f"cannot permute {w.shape} for RoPE: {rows} rows, {n_head} heads")
    out: FloatArray = (
        w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )
    return out


def unpermute(w: FloatArray, n_head: int, n_head_kv: int | None) -> FloatArray:
    """The inverse of :func:`permute`."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise GGUFFormatError(f"cannot unpermute {w.shape}: {rows} rows, {n_head} heads")
    out: FloatArray = (
        w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )
    return out


def _is_conv1d_weight(name: str) -> bool:
    return name.endswith(".weight") and name.rpartition(".")[0].endswith(_GPT2_CONV1D)


def to_gguf_layout(hp: HParams, name: str, w: FloatArray) -> FloatArray:
    """HF tensor ``name`` rearranged as llama.cpp's converter writes it."""
    if hp.model_type == "llama":
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            return permute(w, hp.n_head, hp.n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            return permute(w, hp.n_head, hp.n_head_kv)
    if hp.model_type == "gpt2" and _is_conv1d_weight(name):
        return np.ascontiguousarray(w.T)
    return w


def to_hf_layout(hp: HParams, name: str, w: FloatArray) -> FloatArray:
    """The inverse of :func:`to_gguf_layout` (``name`` is the HF name)."""
    if hp.model_type == "llama":
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            return unpermute(w, hp.n_head, hp.n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            return unpermute(w, hp.n_head, hp.n_head_kv)
    if hp.model_type == "gpt2" and _is_conv1d_weight(name):
        return np.ascontiguousarray(w.T)
    return w


def gguf_shape(hp: HParams, name: str, hf_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (numpy-order) shape :func:`to_gguf_layout` gives a tensor of ``hf_shape``."""
    if hp.model_type == "gpt2" and _is_conv1d_weight(name) and len(hf_shape) == 2:
        return (hf_shape[1], hf_shape[0])
    return hf_shape
