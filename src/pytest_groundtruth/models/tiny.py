"""Tiny deterministic random models (llama, qwen2 with GQA, gpt2, qwen3, gemma3, phi3).

Each is built from a config plus weights drawn from numpy's PCG64 generator seeded
with (seed, crc32(parameter name)), so the weights depend on neither torch's RNG nor
the order in which transformers initialises modules: the same bytes on every machine
and every library version that keeps the parameter names. They use the embedded
model's tokenizer so that prompts and oracles are real text.

The qwen3, gemma3 and phi3 models have a feed-forward width of 256 (and qwen3 and gemma3
attention widths of 512 and 1024), so that llama.cpp's K-quants (super-blocks of 256)
apply to ``ffn_down`` (and ``attn_output``) rather than falling back to legacy types for
every tensor, as they do for the 64-wide rows of the first three. Their head sizes are
their families' defaults (qwen3 128, gemma3 256 with ``query_pre_attn_scalar`` 256):
transformers' GGUF loader (5.24) does not read ``qwen3.attention.key_length`` nor
gemma3's attention scalar, so only a model with the defaults comes back from a GGUF as
itself, and the roundtrip needs that. Gemma3 keeps transformers' default layer pattern
(both layers sliding-window, which llama.cpp's fixed pattern of 6 agrees with) with a
512-token window, the whole context. Its norm weights are drawn around 0 (Gemma's norms
multiply by 1 + w), and its output projection is its own: with the embedding tied and
scaled by sqrt(hidden), a random Gemma repeats its input token for ever (measured), which
leaves the token suites nothing to compare.
Their ``general.name`` is a neutral ``tiny-random`` (:data:`EXTRAS`): llama.cpp's
vocabulary loader gives Phi-3's SentencePiece token attributes to any model whose name
contains "phi3" and fails on a byte-level BPE vocabulary without ``</s>``; and phi3's
tokenizer_config names ``GPT2Tokenizer``, which is how llama.cpp's converter tells a
byte-level BPE Phi (Phi-4) from a SentencePiece one.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

# Bump when the construction below changes: it is part of the model fingerprint.
BUILDER_VERSION = 2
SEED = 20261122
WEIGHT_STD = 0.2  # measured: at transformers' default 0.02, greedy output repeats one token

# llama.cpp's pre-tokenizer for the embedded tokenizer as transformers loads it for each
# architecture: as Qwen2Tokenizer for qwen2 (whose "\n\n" split llama.cpp reproduces
# as "qwen2"), as the tokenizer.json it is for the others ("smollm").
DEFAULT_PRE = "smollm"
TOKENIZER_PRE = {"qwen2": "qwen2"}

# Special token ids of the embedded SmolLM2 tokenizer.
_SPECIAL = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}

CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        "vocab_size": 49152,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        **_SPECIAL,
    },
    "qwen2": {
        "model_type": "qwen2",
        "vocab_size": 49152,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        **_SPECIAL,
    },
    "qwen3": {
        "model_type": "qwen3",
        "vocab_size": 49152,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        **_SPECIAL,
    },
    "gemma3": {
        "model_type": "gemma3_text",
        "vocab_size": 49152,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 512,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        **_SPECIAL,
    },
    "phi3": {
        "model_type": "phi3",
        "vocab_size": 49152,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "original_max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        **_SPECIAL,
    },
    "gpt2": {
        "model_type": "gpt2",
        "vocab_size": 49152,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        # GPT-2's standard context and feed-forward (4 x n_embd): transformers' GGUF
        # loader rebuilds GPT-2 configs with these, so the roundtrip can reload it.
        "n_positions": 1024,
        "n_inner": None,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        **_SPECIAL,
    },
}


# Written into config.json / tokenizer_config.json after saving (module docstring).
_NEUTRAL_NAME = {"config.json": {"_name_or_path": "groundtruth/tiny-random"}}
EXTRAS: dict[str, dict[str, dict[str, Any]]] = {
    "qwen3": _NEUTRAL_NAME,
    "gemma3": _NEUTRAL_NAME,
    "phi3": {**_NEUTRAL_NAME, "tokenizer_config.json": {"tokenizer_class": "GPT2Tokenizer"}},
}


def fingerprint_payload(arch: str) -> str:
    """What identifies a tiny model: its config, seed, std and builder version."""
    payload: dict[str, Any] = {"arch": arch, "config": CONFIGS[arch], "seed": SEED,
                               "std": WEIGHT_STD, "builder": BUILDER_VERSION}
    if arch in EXTRAS:
        payload["extras"] = EXTRAS[arch]
    if arch in NORM_AROUND_ZERO:
        payload["norm_center"] = 0.0
    return json.dumps(payload, sort_keys=True)


# Architectures whose norms multiply by 1 + w (Gemma): their norm weights are drawn
# around 0, so that every architecture's norms scale by about 1.
NORM_AROUND_ZERO = frozenset({"gemma3"})


def _draw(name: str, shape: tuple[int, ...], norm_center: float = 1.0) -> Any:
    import numpy as np

    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    if len(shape) == 1 and ("norm" in name or ".ln_" in name) and name.endswith("weight"):
        values = norm_center + 0.1 * rng.standard_normal(shape)
    elif len(shape) == 1:  # biases
        values = 0.05 * rng.standard_normal(shape)
    else:
        values = WEIGHT_STD * rng.standard_normal(shape)
    return values.astype(np.float32)


def build(arch: str, out_dir: Path, tokenizer_dir: Path) -> None:
    """Write the tiny ``arch`` model as a float32 safetensors directory at ``out_dir``.

    ``tokenizer_dir`` holds the embedded model's tokenizer (tokenizer.json and config).
    """
    from transformers import AutoTokenizer

    if arch not in CONFIGS:
        raise ValueError(f"tiny model architecture {arch!r} is not one of {sorted(CONFIGS)}")
    _write(arch, dict(CONFIGS[arch]), out_dir, AutoTokenizer.from_pretrained(tokenizer_dir))


def build_with_tokenizer(arch: str, out_dir: Path, tokenizer: Any, hidden: int = 32) -> None:
    """The tiny ``arch`` model around another family's real tokenizer (a transformers
    tokenizer, e.g. the SentencePiece byte-fallback one of a GGUF read with
    ``AutoTokenizer.from_pretrained(dir, gguf_file=...)``): the vocabulary size and the
    special ids are the tokenizer's, the width ``hidden`` (a 262k vocabulary at 32 wide
    is 34 MB per embedding matrix), the weights drawn as for the others."""
    if arch not in CONFIGS:
        raise ValueError(f"tiny model architecture {arch!r} is not one of {sorted(CONFIGS)}")
    params = {**CONFIGS[arch], "vocab_size": len(tokenizer), "hidden_size": hidden}
    for name in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        params[f"{name}_token_id"] = token_id if token_id is not None else params["eos_token_id"]
    _write(arch, params, out_dir, tokenizer)


def _write(arch: str, params: dict[str, Any], out_dir: Path, tokenizer: Any) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(params.pop("model_type"), **params)
    torch.manual_seed(SEED)  # the draws below overwrite every parameter anyway
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied weights appear once
            center = 0.0 if arch in NORM_AROUND_ZERO else 1.0
            param.copy_(torch.from_numpy(_draw(name, tuple(param.shape), center)))
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for file, changes in EXTRAS.get(arch, {}).items():
        path = out_dir / file
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**data, **changes}, indent=2) + "\n", encoding="utf-8")

