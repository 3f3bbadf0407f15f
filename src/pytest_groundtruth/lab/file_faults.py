"""Fault injection: deliberately broken conversions, to measure what each suite catches.

Each :class:`Fault` rewrites a correct GGUF (as our exporter or llama.cpp's converter
wrote it) into a broken one, the way a real converter bug would: the file still loads,
only something inside is wrong. The rewrite copies every key/value and tensor through
``gguf.GGUFWriter``; tensors the fault touches are dequantized, changed and quantized
again to their own type (all other tensors keep their bytes).

The faults (name: what the converter got wrong -> what a good instrument should name):

* embedding_rows_shuffled: 1 000 token embedding rows permuted -> token_embd.weight
* qk_permutation_skipped: llama q/k rows written without llama.cpp's permutation ->
  blk.N.attn_q / attn_k
* rope_theta_wrong: rope frequency base off by 10x -> <arch>.rope.freq_base
* norm_weight_replaced: one layer's attention norm weight set to ones ->
  blk.M.attn_norm.weight
* layer_dropped: the last transformer block left out -> <arch>.block_count
* layer_duplicated: block M overwritten with a copy of block M-1 -> blk.M.*
* scale_off: one weight tensor scaled by 1.02 (a scale rounding bug) ->
  blk.M.ffn_down.weight
* eos_id_wrong: the EOS id written as the BOS id -> tokenizer.ggml.eos_token_id
* tokenizer_pre_wrong: pre-tokenizer written as "default" -> tokenizer.ggml.pre
* bos_added: ``add_bos_token`` written as true for a model that adds none ->
  tokenizer.ggml.add_bos_token
* merges_sorted: BPE merges written in alphabetical instead of rank order ->
  tokenizer.ggml.merges
* vocab_shifted: the ordinary tokens' strings shifted by one id (an off-by-one after the
  special tokens) -> tokenizer.ggml.tokens
* rope_scaling_added: linear RoPE scaling x4 copied from a long-context config ->
  <arch>.rope.scaling.type / factor
* kv_heads_wrong: the KV head count written as the query head count (GQA lost) ->
  <arch>.attention.head_count_kv
* ffn_gate_up_swapped: every block's ffn_gate and ffn_up exchanged (a name-map bug) ->
  blk.N.ffn_gate / ffn_up
* attn_output_transposed: every block's attention output matrix written transposed (a
  row/column-major bug) -> blk.N.attn_output.weight
* q_heads_reversed: the query heads of every block written in reverse head order ->
  blk.N.attn_q.weight
* layers_swapped: blocks M-1 and M exchanged (a layer index bug) -> blk.M-1.*, blk.M.*
* tensor_zeroed: one tensor written as zeros (a conversion that silently failed) ->
  blk.M.ffn_up.weight
* norms_swapped: every block's attention and feed-forward norms exchanged ->
  blk.N.attn_norm / ffn_norm

M is the middle block. Faults that do not apply to an architecture (no RoPE in gpt2, no
q/k permutation outside llama) are skipped with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_groundtruth.core.atomic import atomic_path, atomic_write_text, locked
from pytest_groundtruth.core.usage import touch
from pytest_groundtruth.ggufio import ggml_encoder
from pytest_groundtruth.ggufio.names import unpermute

HARNESS_VERSION = "1"
SCALE = 1.02
SHUFFLED_ROWS = 1000
ROPE_SCALE = 4.0


class FaultNotApplicable(Exception):
    """The fault does not exist for this architecture; the message says why."""


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    responsible: str


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("embedding_rows_shuffled", f"{SHUFFLED_ROWS} token embedding rows permuted",
              "token_embd.weight"),
        Fault("qk_permutation_skipped", "llama q/k rows written in HF order (no permute)",
              "blk.N.attn_q.weight / attn_k.weight"),
        Fault("rope_theta_wrong", "rope frequency base off by 10x", "<arch>.rope.freq_base"),
        Fault("norm_weight_replaced", "middle layer's attention norm weight set to ones",
              "blk.M.attn_norm.weight"),
        Fault("layer_dropped", "the last transformer block left out", "<arch>.block_count"),
        Fault("layer_duplicated", "block M overwritten by a copy of block M-1", "blk.M.*"),
        Fault("scale_off", f"middle layer's ffn_down scaled by {SCALE}",
              "blk.M.ffn_down.weight"),
        Fault("eos_id_wrong", "EOS id written as the BOS id", "tokenizer.ggml.eos_token_id"),
        Fault("tokenizer_pre_wrong", "pre-tokenizer written as 'default'",
              "tokenizer.ggml.pre"),
        Fault("bos_added", "add_bos_token written as true", "tokenizer.ggml.add_bos_token"),
        Fault("merges_sorted", "BPE merges in alphabetical order", "tokenizer.ggml.merges"),
        Fault("vocab_shifted", "ordinary token strings shifted by one id",
              "tokenizer.ggml.tokens"),
        Fault("rope_scaling_added", f"linear RoPE scaling x{ROPE_SCALE:g} added",
              "<arch>.rope.scaling.type / factor"),
        Fault("kv_heads_wrong", "KV head count written as the query head count",
              "<arch>.attention.head_count_kv"),
        Fault("ffn_gate_up_swapped", "every block's ffn_gate and ffn_up exchanged",
              "blk.N.ffn_gate.weight / ffn_up.weight"),
        Fault("attn_output_transposed", "every block's attention output matrix transposed",
              "blk.N.attn_output.weight"),
        Fault("q_heads_reversed", "query heads in reverse order in every block",
              "blk.N.attn_q.weight"),
        Fault("layers_swapped", "blocks M-1 and M exchanged", "blk.M-1.*, blk.M.*"),
        Fault("tensor_zeroed", "one tensor written as zeros", "blk.M.ffn_up.weight"),
        Fault("norms_swapped", "every block's attention and feed-forward norms exchanged",
              "blk.N.attn_norm.weight / ffn_norm.weight"),
    )
}


@dataclass
class _Tensor:
    name: str
    ggml_type: Any  # gguf.GGMLQuantizationType
    data: npt.NDArray[Any]  # raw, as GGUFReader maps it
    changed: bool = False


class _Model:
    """A GGUF in memory-mapped pieces: ordered key/values and tensors."""

    def __init__(self, path: Path) -> None:
        import gguf

        reader = gguf.GGUFReader(path, "r")
        self.arch: str = str(reader.fields["general.architecture"].contents())
        self.fields: dict[str, tuple[Any, Any, Any]] = {}  # name -> (value, type, subtype)
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name == "general.architecture":
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            self.fields[field.name] = (field.contents(), vtype, sub)
        self.tensors = [_Tensor(t.name, t.tensor_type, t.data) for t in reader.tensors]

    def value(self, key: str) -> Any:
        return self.fields[key][0]

    def set(self, key: str, value: Any) -> None:
        _, vtype, sub = self.fields[key]
        self.fields[key] = (value, vtype, sub)

    def add(self, key: str, value: Any, vtype: Any) -> None:
        """Set ``key`` (of GGUF value type ``vtype``), adding it when absent."""
        self.fields[key] = (value, vtype, None)

    def block_tensors(self, block: int) -> list[_Tensor]:
        return [t for t in self.tensors if t.name.startswith(f"blk.{block}.")]

    @property
    def blocks(self) -> int:
        return int(self.value(f"{self.arch}.block_count"))

    def tensor(self, name: str) -> _Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"tensor {name!r} not in the GGUF")

    def floats(self, t: _Tensor) -> npt.NDArray[np.float32]:
        from gguf.quants import dequantize

        return np.asarray(dequantize(t.data, t.ggml_type), dtype=np.float32)

    def replace(self, t: _Tensor, values: npt.NDArray[np.float32]) -> None:
        """Store ``values`` in the tensor's own type (K-quants through libggml's encoder)."""
        import gguf
        from gguf.quants import quantize


        values = values.astype(np.float32)
        if t.ggml_type == gguf.GGMLQuantizationType.F32:
            t.data = values
        elif ggml_encoder.available(t.ggml_type.name) is None and t.ggml_type.name not in (
            "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"
        ):
            t.data = ggml_encoder.encode(values, t.ggml_type.name)
        else:
            t.data = quantize(values, t.ggml_type)
        t.changed = True

    def write(self, out: Path) -> None:
        import gguf

        writer = gguf.GGUFWriter(out, self.arch)
        for key, (value, vtype, sub) in self.fields.items():
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for t in self.tensors:
            writer.add_tensor(t.name, t.data, raw_dtype=t.ggml_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def _middle(model: _Model) -> int:
    return model.blocks // 2


def _shuffle_embedding(model: _Model) -> str:
    t = model.tensor("token_embd.weight")
    rows = np.random.default_rng(0).choice(t.data.shape[0], SHUFFLED_ROWS, replace=False)
    data = np.array(t.data)  # raw rows (a quantized row is whole blocks): bytes move intact
    data[np.sort(rows)] = data[rows]
    t.data, t.changed = data, True
    return f"token_embd.weight: {SHUFFLED_ROWS} rows permuted (rng seed 0)"


def _skip_qk_permutation(model: _Model) -> str:

    if model.arch != "llama":
        raise FaultNotApplicable(f"{model.arch} has no llama q/k permutation")
    heads = int(model.value("llama.attention.head_count"))
    kv_heads = int(model.value("llama.attention.head_count_kv"))
    for block in range(model.blocks):
        for part, n_kv in (("attn_q", heads), ("attn_k", kv_heads)):
            t = model.tensor(f"blk.{block}.{part}.weight")
            model.replace(t, unpermute(model.floats(t), heads, n_kv))
    return "blk.*.attn_q/attn_k.weight: rows left in Hugging Face order"


def _rope_theta(model: _Model) -> str:
    key = f"{model.arch}.rope.freq_base"
    if key not in model.fields:
        raise FaultNotApplicable(f"{model.arch} has no rope.freq_base")
    old = float(model.value(key))
    model.set(key, old / 10)
    return f"{key}: {old} -> {old / 10}"


def _norm_ones(model: _Model) -> str:
    t = model.tensor(f"blk.{_middle(model)}.attn_norm.weight")
    model.replace(t, np.ones_like(model.floats(t)))
    return f"{t.name}: set to ones"


def _drop_layer(model: _Model) -> str:
    last = model.blocks - 1
    model.tensors = [t for t in model.tensors if not t.name.startswith(f"blk.{last}.")]
    model.set(f"{model.arch}.block_count", last)
    return f"blk.{last}.* removed, {model.arch}.block_count {last + 1} -> {last}"


def _duplicate_layer(model: _Model) -> str:
    if model.blocks < 2:
        raise FaultNotApplicable("a single-block model has no layer to duplicate")
    dst = max(_middle(model), 1)
    src = dst - 1
    for t in model.tensors:
        if t.name.startswith(f"blk.{dst}."):
            twin = model.tensor(t.name.replace(f"blk.{dst}.", f"blk.{src}.", 1))
            t.data, t.ggml_type, t.changed = twin.data, twin.ggml_type, True
    return f"blk.{dst}.* replaced by copies of blk.{src}.*"


def _scale(model: _Model) -> str:
    t = model.tensor(f"blk.{_middle(model)}.ffn_down.weight")
    model.replace(t, model.floats(t) * np.float32(SCALE))
    return f"{t.name}: multiplied by {SCALE}"


def _eos(model: _Model) -> str:
    bos = int(model.value("tokenizer.ggml.bos_token_id"))
    eos = int(model.value("tokenizer.ggml.eos_token_id"))
    model.set("tokenizer.ggml.eos_token_id", bos)
    return f"tokenizer.ggml.eos_token_id: {eos} -> {bos} (the BOS id)"


def _pre(model: _Model) -> str:
    key = "tokenizer.ggml.pre"
    old = model.value(key) if key in model.fields else None
    if old == "default":
        raise FaultNotApplicable("the pre-tokenizer is already 'default'")
    model.set(key, "default")
    return f"{key}: {old!r} -> 'default'"


def _exchange(a: _Tensor, b: _Tensor) -> None:
    if a.data.shape != b.data.shape:
        raise FaultNotApplicable(f"{a.name} and {b.name} differ in shape")
    a.data, b.data = b.data, a.data
    a.ggml_type, b.ggml_type = b.ggml_type, a.ggml_type
    a.changed = b.changed = True


def _bos_added(model: _Model) -> str:
    import gguf

    key = "tokenizer.ggml.add_bos_token"
    old = model.value(key) if key in model.fields else None
    if old is True:
        raise FaultNotApplicable("the model already adds a BOS token")
    model.add(key, True, gguf.GGUFValueType.BOOL)
    return f"{key}: {old!r} -> True"


def _merges_sorted(model: _Model) -> str:
    key = "tokenizer.ggml.merges"
    if key not in model.fields:
        raise FaultNotApplicable("the tokenizer has no BPE merges")
    merges = [str(m) for m in model.value(key)]
    model.set(key, sorted(merges))
    return f"{key}: {len(merges)} merges written in alphabetical order"


def _vocab_shifted(model: _Model) -> str:
    key = "tokenizer.ggml.tokens"
    tokens = [str(t) for t in model.value(key)]
    types = [int(t) for t in model.value("tokenizer.ggml.token_type")]
    first = next((i for i, t in enumerate(types) if t == 1), None)  # 1: a normal token
    if first is None or first + 1 >= len(tokens):
        raise FaultNotApplicable("the vocabulary has no run of normal tokens to shift")
    model.set(key, tokens[:first] + tokens[first + 1:] + [tokens[first]])
    return f"{key}: strings of ids {first}..{len(tokens) - 1} shifted down by one id"


def _rope_scaling(model: _Model) -> str:
    import gguf

    if not any(k.startswith(f"{model.arch}.rope.") for k in model.fields):
        raise FaultNotApplicable(f"{model.arch} has no RoPE")
    key = f"{model.arch}.rope.scaling"
    if f"{key}.type" in model.fields:
        raise FaultNotApplicable(f"the model already declares {key}.type")
    model.add(f"{key}.type", "linear", gguf.GGUFValueType.STRING)
    model.add(f"{key}.factor", ROPE_SCALE, gguf.GGUFValueType.FLOAT32)
    return f"{key}.type = 'linear', {key}.factor = {ROPE_SCALE} added"


def _kv_heads(model: _Model) -> str:
    heads = f"{model.arch}.attention.head_count"
    key = f"{heads}_kv"
    n_heads = int(model.value(heads))
    old = int(model.value(key)) if key in model.fields else n_heads
    if old == n_heads:
        raise FaultNotApplicable("the model has as many KV heads as query heads (no GQA)")
    model.set(key, n_heads)
    return f"{key}: {old} -> {n_heads}"


def _each_block(model: _Model, name: str) -> list[_Tensor]:
    found = [model.tensor(f"blk.{b}.{name}") for b in range(model.blocks)
             if any(t.name == f"blk.{b}.{name}" for t in model.tensors)]
    if not found:
        raise FaultNotApplicable(f"{model.arch} has no blk.N.{name}")
    return found


def _gate_up(model: _Model) -> str:
    gates = _each_block(model, "ffn_gate.weight")
    for gate in gates:
        _exchange(gate, model.tensor(gate.name.replace("ffn_gate", "ffn_up")))
    return f"blk.0..{len(gates) - 1}.ffn_gate.weight <-> ffn_up.weight"


def _attn_output_transposed(model: _Model) -> str:
    outs = _each_block(model, "attn_output.weight")
    for t in outs:
        values = model.floats(t)
        if values.shape[0] != values.shape[1]:
            raise FaultNotApplicable(f"{t.name} is not square")
        model.replace(t, np.ascontiguousarray(values.T))
    return f"blk.0..{len(outs) - 1}.attn_output.weight: transposed"


def _q_heads_reversed(model: _Model) -> str:
    heads = int(model.value(f"{model.arch}.attention.head_count"))
    qs = _each_block(model, "attn_q.weight")
    for t in qs:
        values = model.floats(t)
        rows = values.shape[0] // heads
        model.replace(t, np.ascontiguousarray(
            values.reshape(heads, rows, -1)[::-1].reshape(values.shape)))
    return f"blk.0..{len(qs) - 1}.attn_q.weight: {heads} heads in reverse order"


def _layers_swapped(model: _Model) -> str:
    if model.blocks < 2:
        raise FaultNotApplicable("a single-block model has no two layers to swap")
    dst = max(_middle(model), 1)
    for t in model.block_tensors(dst):
        _exchange(t, model.tensor(t.name.replace(f"blk.{dst}.", f"blk.{dst - 1}.", 1)))
    return f"blk.{dst - 1}.* <-> blk.{dst}.*"


def _zeroed(model: _Model) -> str:
    t = model.tensor(f"blk.{_middle(model)}.ffn_up.weight")
    model.replace(t, np.zeros_like(model.floats(t)))
    return f"{t.name}: written as zeros"


def _norms_swapped(model: _Model) -> str:
    norms = _each_block(model, "attn_norm.weight")
    for t in norms:
        _exchange(t, model.tensor(t.name.replace("attn_norm", "ffn_norm")))
    return f"blk.0..{len(norms) - 1}.attn_norm.weight <-> ffn_norm.weight"


APPLY: dict[str, Callable[[_Model], str]] = {
    "embedding_rows_shuffled": _shuffle_embedding,
    "qk_permutation_skipped": _skip_qk_permutation,
    "rope_theta_wrong": _rope_theta,
    "norm_weight_replaced": _norm_ones,
    "layer_dropped": _drop_layer,
    "layer_duplicated": _duplicate_layer,
    "scale_off": _scale,
    "eos_id_wrong": _eos,
    "tokenizer_pre_wrong": _pre,
    "bos_added": _bos_added,
    "merges_sorted": _merges_sorted,
    "vocab_shifted": _vocab_shifted,
    "rope_scaling_added": _rope_scaling,
    "kv_heads_wrong": _kv_heads,
    "ffn_gate_up_swapped": _gate_up,
    "attn_output_transposed": _attn_output_transposed,
    "q_heads_reversed": _q_heads_reversed,
    "layers_swapped": _layers_swapped,
    "tensor_zeroed": _zeroed,
    "norms_swapped": _norms_swapped,
}


def inject(fault: str, source: Path, out: Path) -> str:
    """Write ``source`` with ``fault`` injected to ``out`` (atomically); return what changed.

    Raises :class:`FaultNotApplicable` when the fault does not exist for the model.
    """

    if fault not in APPLY:
        raise ValueError(f"unknown fault {fault!r} (known: {', '.join(APPLY)})")
    model = _Model(source)
    change = APPLY[fault](model)
    with atomic_path(out) as tmp:
        model.write(tmp)
    return change


def broken_artifact(cache_dir: Path, source: Path, source_key: str, fault: str) -> tuple[Path,
                                                                                        str]:
    """The cached broken copy of ``source`` (keyed by the source and harness version)."""

    out = cache_dir / "faults" / f"{source_key[:24]}-{fault}-v{HARNESS_VERSION}.gguf"
    note = out.with_suffix(".json")
    with locked(out):
        if not (out.is_file() and note.is_file()):
            change = inject(fault, source, out)
            atomic_write_text(note, json.dumps({"fault": fault, "change": change}) + "\n")
        touch(out)
    return out, str(json.loads(note.read_text())["change"])
