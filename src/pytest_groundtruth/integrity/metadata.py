"""Metadata: the artifact's hyperparameters and special tokens against the source model's.

:func:`expected_fields` reads what the source says (config.json through
:func:`~pytest_groundtruth.ggufio.names.hparams`, and the reference tokenizer's
:class:`~.tokenizer.TokenizerFacts`); :func:`gguf_fields`, :func:`config_fields` and
:func:`apr_fields` read what an artifact says; :func:`compare_fields` pairs them field
by field. Where a GGUF omits a key, llama.cpp uses a default, and so does the
comparison (the finding says so). Floats (rope theta, norm epsilon) are stored as
float32 in GGUF, so they are compared as float32.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_groundtruth.ggufio import names
from pytest_groundtruth.integrity.findings import MetadataFinding
from pytest_groundtruth.integrity.tokenizer import TokenizerFacts

# llama.cpp 0.3.36 (llama-vocab.cpp) adds BOS by default for these gpt2-BPE
# pre-tokenizers and for SentencePiece / WordPiece vocabularies; otherwise not.
_ADD_BOS_PRE = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                          "midm-2.0", "lfm2", "jina-v5-nano", "tekken", "chameleon"})
_ADD_BOS_MODELS = frozenset({"llama", "bert"})
FLOAT_FIELDS = frozenset({"rope theta", "rope scaling factor", "norm epsilon",
                          "rope theta (sliding layers)", "final logit softcap"})
_CLASS_SUFFIXES = ("forcausallm", "lmheadmodel")


@dataclass(frozen=True)
class Value:
    """One side of a field: the value and where it was read (or why it is absent)."""

    value: Any
    where: str
    note: str = ""


def _rope(config: Mapping[str, Any]) -> dict[str, Any]:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        return {}
    inner = rope.get("full_attention", rope)
    return inner if isinstance(inner, dict) else {}


def expected_fields(config: Mapping[str, Any], facts: TokenizerFacts | None) -> dict[str, Value]:
    """Every field the source model defines, from config.json and the tokenizer."""
    hp = names.hparams(config, "config.json")
    cfg = hp.config  # text_config merged in
    out = {
        "architecture": Value(hp.arch_name, f"config.json model_type {hp.model_type!r}"),
        "layers": Value(hp.block_count, "config.json num_hidden_layers"),
        "attention heads": Value(hp.n_head, "config.json num_attention_heads"),
        "KV heads": Value(hp.n_head_kv, "config.json num_key_value_heads"),
        "hidden size": Value(hp.n_embd, "config.json hidden_size"),
        "feed-forward size": Value(hp.n_ff, "config.json intermediate_size"),
        "vocab size": Value(hp.vocab_size, "config.json vocab_size"),
        "token count": Value(hp.vocab_size, "config.json vocab_size"),
        "tied embeddings": Value(hp.tied, "config.json tie_word_embeddings"),
    }
    keys = (("n_positions", "n_ctx") if hp.model_type == "gpt2" else
            ("max_position_embeddings", "n_ctx", "n_positions"))
    context = next((cfg[k] for k in keys if isinstance(cfg.get(k), int)), None)
    out["context length"] = Value(context, f"config.json {keys[0]}")
    if hp.model_type == "gpt2":
        out["norm epsilon"] = Value(cfg.get("layer_norm_epsilon"), "config.json layer_norm_epsilon")
    else:
        rope = _rope(cfg)
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        out["rope theta"] = Value(theta, "config.json rope_theta")
        kind = rope.get("rope_type", rope.get("type")) or "default"
        out["rope scaling"] = Value("none" if kind == "default" else kind,
                                    "config.json rope_parameters.rope_type")
        if kind != "default" and rope.get("factor") is not None:
            out["rope scaling factor"] = Value(rope["factor"], "config.json rope factor")
        partial = rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
        out["rope dimensions"] = Value(int(float(partial) * hp.head_dim),
                                       "config.json head_dim (x partial_rotary_factor)")
        out["head size"] = Value(hp.head_dim, "config.json head_dim (else hidden / heads)")
        out["norm epsilon"] = Value(cfg.get("rms_norm_eps"), "config.json rms_norm_eps")
        out.update(_architecture_fields(hp, cfg))
    if facts is not None:
        where = "the reference tokenizer"
        out["BOS id"] = Value(facts.bos_id, f"{where} (bos_token_id, else config.json)")
        out["EOS id"] = Value(facts.eos_ids or None, f"{where} (eos_token_id, else config.json)")
        out["pad id"] = Value(facts.pad_id, f"{where} (pad_token_id, else config.json)")
        out["adds BOS"] = Value(facts.adds_bos, f"{where}: encode() adds BOS")
        out["adds EOS"] = Value(facts.adds_eos, f"{where}: encode() adds EOS")
    return out


# Fields only some architectures have: config.json says them, llama.cpp reads them.
SLIDING_WINDOW = frozenset({"gemma3", "phi3"})


def _architecture_fields(hp: names.HParams, cfg: Mapping[str, Any]) -> dict[str, Value]:
    out: dict[str, Value] = {}
    arch = hp.arch_name
    rope_all = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if arch in SLIDING_WINDOW:
        window = cfg.get("sliding_window")
        out["sliding window"] = Value(window if isinstance(window, int) else 0,
                                      "config.json sliding_window (none: 0)")
    if isinstance(rope_all, dict) and isinstance(rope_all.get("sliding_attention"), dict):
        theta = rope_all["sliding_attention"].get("rope_theta")
        if theta is not None:
            out["rope theta (sliding layers)"] = Value(
                theta, "config.json rope_parameters.sliding_attention.rope_theta")
    original = (rope_all.get("original_max_position_embeddings")
                if isinstance(rope_all, dict) else None) or cfg.get(
                    "original_max_position_embeddings")
    if arch == "phi3" and original is not None:
        out["original context length"] = Value(original,
                                               "config.json original_max_position_embeddings")
    if cfg.get("final_logit_softcapping"):
        out["final logit softcap"] = Value(cfg["final_logit_softcapping"],
                                           "config.json final_logit_softcapping")
    return out


def gguf_fields(scalars: Mapping[str, Any], arrays: Mapping[str, int],
                tensor_names: Collection[str]) -> dict[str, Value]:
    """The same fields as a GGUF states them (``scalars`` from scan_gguf, ``arrays`` the
    array lengths, ``tensor_names`` its tensors), with llama.cpp's defaults for absent keys."""
    arch = str(scalars.get("general.architecture"))
    out: dict[str, Value] = {"architecture": Value(scalars.get("general.architecture"),
                                                   "general.architecture")}

    def key(field: str, name: str, default: Any = None, why: str = "") -> None:
        full = name if name.startswith(("tokenizer.", "general.")) else f"{arch}.{name}"
        if full in scalars:
            out[field] = Value(scalars[full], full)
        elif default is not None:
            out[field] = Value(default, full, f"absent: {why or 'llama.cpp default'}")
        else:
            out[field] = Value(None, full, "absent")

    key("layers", "block_count")
    key("attention heads", "attention.head_count")
    heads = scalars.get(f"{arch}.attention.head_count")
    key("KV heads", "attention.head_count_kv", heads, "llama.cpp uses head_count")
    key("hidden size", "embedding_length")
    key("feed-forward size", "feed_forward_length")
    tokens = arrays.get("tokenizer.ggml.tokens")
    key("vocab size", "vocab_size", tokens, "llama.cpp uses the token list's length")
    out["token count"] = Value(tokens, "len(tokenizer.ggml.tokens)")
    key("context length", "context_length")
    if arch != "gpt2":
        key("rope theta", "rope.freq_base", 10000.0, "llama.cpp default 10000")
        key("rope scaling", "rope.scaling.type", "none", "no scaling")
        key("rope scaling factor", "rope.scaling.factor", 1.0, "no scaling")
        n_embd = scalars.get(f"{arch}.embedding_length")
        head_dim = (scalars.get(f"{arch}.attention.key_length")
                    or (n_embd // heads if isinstance(n_embd, int) and isinstance(heads, int)
                        and heads else None))
        key("rope dimensions", "rope.dimension_count", head_dim, "the head size")
        key("head size", "attention.key_length", head_dim, "hidden size / heads")
        key("norm epsilon", "attention.layer_norm_rms_epsilon")
        key("sliding window", "attention.sliding_window")
        key("rope theta (sliding layers)", "rope.freq_base_swa", 10000.0,
            "llama.cpp's default 10000")
        key("original context length", "rope.scaling.original_context_length")
        key("final logit softcap", "final_logit_softcapping")
    else:
        key("norm epsilon", "attention.layer_norm_epsilon")
    out["tied embeddings"] = Value("output.weight" not in tensor_names, "output.weight")
    key("BOS id", "tokenizer.ggml.bos_token_id")
    key("EOS id", "tokenizer.ggml.eos_token_id")
    key("pad id", "tokenizer.ggml.padding_token_id")
    model = scalars.get("tokenizer.ggml.model")
    pre = scalars.get("tokenizer.ggml.pre")
    default_bos = model in _ADD_BOS_MODELS or (model == "gpt2" and pre in _ADD_BOS_PRE)
    key("adds BOS", "tokenizer.ggml.add_bos_token", default_bos,
        f"llama.cpp's default for {model}/{pre}")
    key("adds EOS", "tokenizer.ggml.add_eos_token", False, "llama.cpp's default")
    return out


def config_fields(config: Mapping[str, Any], facts: TokenizerFacts | None) -> dict[str, Value]:
    """The fields of a transformers model directory artifact (its own config.json)."""
    found = expected_fields(config, facts)
    return {k: Value(v.value, v.where.replace("config.json", "artifact config.json")
                     .replace("the reference tokenizer", "the artifact's tokenizer"))
            for k, v in found.items()}


APR_KEYS = {"architecture": "architecture", "layers": "num_layers",
            "attention heads": "num_heads", "hidden size": "hidden_size",
            "vocab size": "vocab_size"}


def apr_fields(info: Mapping[str, Any]) -> dict[str, Value]:
    """The fields ``apr inspect --json`` reports (the others are not exposed)."""
    return {field: Value(info.get(key), f"apr inspect .{key}",
                         "" if key in info else "not reported by apr inspect")
            for field, key in APR_KEYS.items()}


def _same(field: str, expected: Any, actual: Any) -> bool:
    if isinstance(expected, tuple):
        return actual in expected
    if field in FLOAT_FIELDS and isinstance(expected, (int, float)) and isinstance(
            actual, (int, float)):
        return bool(np.float32(expected) == np.float32(actual))
    if field == "architecture" and isinstance(expected, str) and isinstance(actual, str):
        # apr may name the transformers class (LlamaForCausalLM) rather than the type
        want, got = expected.lower(), actual.lower()
        return got == want or (got.startswith(want) and got.endswith(_CLASS_SUFFIXES))
    return bool(expected == actual)


def compare_fields(expected: Mapping[str, Value], actual: Mapping[str, Value],
                   only: Collection[str] | None = None) -> list[MetadataFinding]:
    """One finding per field both sides define (``only``: restrict to these fields).

    A field the source leaves unset (``None``) is recorded as not compared; one the
    artifact does not report is a mismatch unless it is outside ``only``.
    """
    findings = []
    for field, want in expected.items():
        if only is not None and field not in only:
            continue
        got = actual.get(field, Value(None, "-", "not reported"))
        if want.value is None:
            findings.append(MetadataFinding(field, got.where, None, got.value, want.where, True,
                                            "not set in the source: not compared"))
            continue
        ok = _same(field, want.value, got.value)
        note = got.note
        if field == "tied embeddings" and want.value is True and got.value is False:
            ok, note = True, ("output.weight present although tied: it is compared with "
                              "the embedding in the tensor check")
        findings.append(MetadataFinding(field, got.where, want.value, got.value, want.where,
                                        ok, note))
    return findings
