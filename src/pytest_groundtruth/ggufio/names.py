"""Hugging Face <-> GGUF: architectures, tensor names, layouts and the hyperparameters.

Names go through ``gguf``'s own :class:`gguf.TensorNameMap`, the table llama.cpp's
converter uses, in both directions: forward, HF name -> GGUF name; backward, from the
names a model actually has (:class:`TensorNames`: the source's safetensors names, or the
names transformers gives a model built from the config on the meta device,
:func:`skeleton`). No per-architecture name table is kept here.

What llama.cpp's converter does to a tensor besides renaming it is data per
architecture (:class:`Layout`, :data:`LAYOUTS`), each rule read from
``convert_hf_to_gguf.py`` of llama-cpp-python 0.3.36 (``conversion/*.py``):

* ``permute_qk``: the rows of ``q_proj`` and ``k_proj`` (weights and biases) go from HF's
  "rotate half" RoPE layout to llama.cpp's interleaved one (``LlamaModel.permute``:
  llama, mistral); NEOX-RoPE architectures (qwen2, qwen3, gemma3, phi3) keep HF's rows;
* ``norm_offset``: Gemma's RMSNorm multiplies by ``1 + w``; the converter stores
  ``w + 1`` for every ``*norm.weight`` (``Gemma3Model.norm_shift``);
* ``conv1d``: GPT-2's ``Conv1D`` weights are ``[in, out]``; GGUF wants ``[out, in]``;
* fused tensors (phi3's ``qkv_proj`` and ``gate_up_proj``) keep their HF layout
  (``attn_qkv``, ``ffn_up`` with both halves);
* ``tie_default``: transformers' ``tie_word_embeddings`` default when config.json omits
  it; a tied model has no ``output.weight``.

An architecture that gguf knows but :data:`LAYOUTS` does not has ``known = False``:
names still map, tensors are compared as stored, and whoever reads the result is told
that no layout rule is known (:attr:`Layout.unknown_note`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt


class GGUFExportError(ValueError):
    """The model directory cannot be exported; the message names the file and the field."""


class GGUFFormatError(ValueError):
    """A GGUF file cannot be read back as the model it claims to be."""


@dataclass(frozen=True)
class Layout:
    """What llama.cpp's converter does to one architecture's tensors besides naming them."""

    arch: gguf.MODEL_ARCH
    converter_class: str  # the convert_hf_to_gguf.py class the rules were read from
    permute_qk: bool = False
    norm_offset: float = 0.0
    conv1d: tuple[str, ...] = ()
    tie_default: bool = False
    exported: bool = False  # our exporter writes this architecture
    known: bool = True

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]

    @property
    def unknown_note(self) -> str:
        return (f"no layout rules are known for architecture {self.arch_name!r} (q/k "
                "permutation, norm offsets, transposes): tensors are compared as stored, so a "
                "value mismatch may be a missing rule rather than a broken file")


_GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
M = gguf.MODEL_ARCH
# config.json model_type -> layout rules (convert_hf_to_gguf.py, llama-cpp-python 0.3.36).
LAYOUTS: dict[str, Layout] = {
    "llama": Layout(M.LLAMA, "LlamaModel", permute_qk=True, exported=True),
    "mistral": Layout(M.LLAMA, "LlamaModel (MistralForCausalLM)", permute_qk=True),
    "qwen2": Layout(M.QWEN2, "Qwen2Model", exported=True),
    "qwen3": Layout(M.QWEN3, "Qwen3Model", exported=True),
    "gpt2": Layout(M.GPT2, "GPT2Model", conv1d=_GPT2_CONV1D, tie_default=True, exported=True),
    "gemma3_text": Layout(M.GEMMA3, "Gemma3Model", norm_offset=1.0, tie_default=True,
                          exported=True),
    "phi3": Layout(M.PHI3, "Phi3MiniModel", exported=True),
}
EXPORTED = tuple(t for t, layout in LAYOUTS.items() if layout.exported)

# Buffers some checkpoints carry that are not weights (the converter drops them too).
SKIPPED_SUFFIXES = (
    ".attn.bias",
    ".attn.masked_bias",
    ".attention.masked_bias",
    ".attention.bias",
    ".rotary_emb.inv_freq",
)
# GGUF tensors llama.cpp's converter generates that have no HF counterpart.
GENERATED_GGUF_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight",
                          "rope_factors_short.weight")
OUTPUT = "lm_head.weight"


def layout_of(model_type: str, source: str = "config.json") -> Layout:
    """The rules for ``model_type``; an architecture gguf knows by the same name gets
    ``known = False`` rules; anything else is a :class:`GGUFExportError`."""
    if model_type in LAYOUTS:
        return LAYOUTS[model_type]
    by_name = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    for candidate in (model_type, model_type.removesuffix("_text").replace("_", "")):
        if candidate in by_name:
            return Layout(by_name[candidate], "-", known=False)
    raise GGUFExportError(
        f"{source}: field 'model_type' = {model_type!r} has no GGUF architecture in gguf "
        f"{_gguf_version()} (known layouts: {', '.join(LAYOUTS)})"
    )


def _gguf_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("gguf")


# --------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class HParams:
    """The shape of a model as config.json states it (what GGUF export and checks need)."""

    model_type: str
    block_count: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    vocab_size: int
    head_dim: int
    tied: bool
    config: Mapping[str, Any] = field(compare=False)
    source: str  # where the config came from, for error messages
    layout: Layout = field(default=LAYOUTS["llama"])

    @property
    def arch(self) -> gguf.MODEL_ARCH:
        return self.layout.arch

    @property
    def arch_name(self) -> str:
        return self.layout.arch_name


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


def _find(config: Mapping[str, Any], keys: tuple[str, ...], source: str) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise GGUFExportError(
                    f"{source}: field {key!r} = {value!r} must be a positive integer"
                )
            return value
    raise GGUFExportError(
        f"{source}: missing config key {' or '.join(repr(k) for k in keys)} "
        f"(needed for model_type {config.get('model_type')!r})"
    )


def hparams(config: Mapping[str, Any], source: str = "config.json") -> HParams:
    """Validate ``config`` (a parsed config.json) for GGUF export, import and checks."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise GGUFExportError(f"{source}: field 'model_type' = {model_type!r} is not a string")
    if "text_config" in config:  # multimodal wrappers keep the LM config nested
        config = {**config, **config["text_config"]}
        model_type = str(config.get("model_type", model_type))
    layout = layout_of(model_type, source)
    block_count = _find(config, ("num_hidden_layers", "n_layer"), source)
    n_embd = _find(config, ("hidden_size", "n_embd"), source)
    n_head = _find(config, ("num_attention_heads", "n_head"), source)
    if model_type == "gpt2":
        n_head_kv = n_head
        n_inner = config.get("n_inner")
        n_ff = n_inner if isinstance(n_inner, int) and n_inner > 0 else 4 * n_embd
    else:
        n_head_kv = config.get("num_key_value_heads") or n_head
        n_ff = _find(config, ("intermediate_size", "n_inner"), source)
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
        tied = layout.tie_default
    return HParams(model_type=model_type, block_count=block_count, n_embd=n_embd,
                   n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff, vocab_size=vocab_size,
                   head_dim=head_dim, tied=tied, config=config, source=source, layout=layout)


# --------------------------------------------------------------------------- names


def gguf_name(hp: HParams, hf_name: str) -> str | None:
    """llama.cpp's name for HF tensor ``hf_name`` (via gguf.TensorNameMap), or None."""
    mapped: str | None = _name_map(hp.arch, hp.block_count).get_name(
        hf_name, try_suffixes=(".weight", ".bias")
    )
    return mapped


@cache
def _name_map(arch: gguf.MODEL_ARCH, block_count: int) -> gguf.TensorNameMap:
    return gguf.get_tensor_name_map(arch, block_count)


class TensorNames:
    """Both directions of the name map for one model, from the HF names it has.

    ``hf_names``: the model's tensor names (its safetensors, or :func:`skeleton`); the
    output projection is always included, since a tied model's GGUF may carry it anyway.
    """

    def __init__(self, hp: HParams, hf_names: Iterable[str]) -> None:
        self.hp = hp
        self.forward: dict[str, str] = {}
        self.unmapped: list[str] = []
        for hf in dict.fromkeys([*hf_names, OUTPUT]):
            if hf.endswith(SKIPPED_SUFFIXES):
                continue
            name = gguf_name(hp, hf)
            if name is None:
                self.unmapped.append(hf)
            else:
                self.forward[hf] = name
        self.backward = {name: hf for hf, name in self.forward.items()}

    def hf(self, gguf_tensor: str) -> str | None:
        """The HF name of GGUF tensor ``gguf_tensor``, or None when the model has none."""
        return self.backward.get(gguf_tensor)


def skeleton(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape, of the transformers model ``config`` describes, built on
    the meta device (no weights, no time): the names and shapes a checkpoint must have."""
    key = json.dumps(config, sort_keys=True, default=str)
    return dict(_skeleton(key))


@cache
def _skeleton(config_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    config = json.loads(config_json)
    try:
        config_class = CONFIG_MAPPING[config["model_type"]]
    except KeyError as exc:
        raise GGUFExportError(f"transformers has no model_type {config.get('model_type')!r} "
                              "(needed to know the model's tensors)") from exc
    hf_config = config_class.from_dict(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return tuple((name, tuple(int(d) for d in tensor.shape))
                 for name, tensor in model.state_dict().items()
                 if not name.endswith(SKIPPED_SUFFIXES))


def required_hf_tensors(hp: HParams) -> dict[str, tuple[int, ...]]:
    """The HF tensors (name -> shape) an export cannot do without: the model's own, less
    the output projection when it is tied to the embedding."""
    return {name: shape for name, shape in skeleton(hp.config).items()
            if not (name == OUTPUT and hp.tied)}


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


def _is_conv1d_weight(hp: HParams, name: str) -> bool:
    return (bool(hp.layout.conv1d) and name.endswith(".weight")
            and name.rpartition(".")[0].endswith(hp.layout.conv1d))


def _qk(name: str) -> str | None:
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return "q"
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return "k"
    return None


def has_norm_offset(hp: HParams, name: str) -> bool:
    return bool(hp.layout.norm_offset) and name.endswith("norm.weight")


def to_gguf_layout(hp: HParams, name: str, w: FloatArray) -> FloatArray:
    """HF tensor ``name`` rearranged as llama.cpp's converter writes it."""
    rules = hp.layout
    if rules.permute_qk and (qk := _qk(name)):
        return permute(w, hp.n_head, hp.n_head if qk == "q" else hp.n_head_kv)
    if _is_conv1d_weight(hp, name):
        return np.ascontiguousarray(w.T)
    if has_norm_offset(hp, name):
        shifted: FloatArray = (w + np.float32(rules.norm_offset)).astype(np.float32)
        return shifted
    return w


def same_layout(hp: HParams, name: str) -> bool:
    """Whether :func:`to_gguf_layout` leaves HF tensor ``name`` as it is (so any block of
    its rows is the same block of the GGUF tensor's rows)."""
    rules = hp.layout
    return not ((rules.permute_qk and _qk(name)) or _is_conv1d_weight(hp, name)
                or has_norm_offset(hp, name))


def to_hf_layout(hp: HParams, name: str, w: FloatArray) -> FloatArray:
    """The inverse of :func:`to_gguf_layout` (``name`` is the HF name)."""
    rules = hp.layout
    if rules.permute_qk and (qk := _qk(name)):
        return unpermute(w, hp.n_head, hp.n_head if qk == "q" else hp.n_head_kv)
    if _is_conv1d_weight(hp, name):
        return np.ascontiguousarray(w.T)
    if has_norm_offset(hp, name):
        shifted: FloatArray = (w - np.float32(rules.norm_offset)).astype(np.float32)
        return shifted
    return w


def gguf_shape(hp: HParams, name: str, hf_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (numpy-order) shape :func:`to_gguf_layout` gives a tensor of ``hf_shape``."""
    if _is_conv1d_weight(hp, name) and len(hf_shape) == 2:
        return (hf_shape[1], hf_shape[0])
    return hf_shape
