"""Tiny deterministic random models (llama, qwen2 with GQA, gpt2) for fast tests.

Each is built from a config plus weights drawn from numpy's PCG64 generator seeded
with (seed, crc32(parameter name)), so the weights depend on neither torch's RNG nor
the order in which transformers initialises modules: the same bytes on every machine
and every library version that keeps the parameter names. They use the embedded
model's tokenizer so that prompts and oracles are real text.
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


def fingerprint_payload(arch: str) -> str:
    """What identifies a tiny model: its config, seed, std and builder version."""
    return json.dumps(
        {"arch": arch, "config": CONFIGS[arch], "seed": SEED, "std": WEIGHT_STD,
         "builder": BUILDER_VERSION},
        sort_keys=True,
    )


def _draw(name: str, shape: tuple[int, ...]) -> Any:
    import numpy as np

    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    if len(shape) == 1 and ("norm" in name or ".ln_" in name) and name.endswith("weight"):
        values = 1.0 + 0.1 * rng.standard_normal(shape)
    elif len(shape) == 1:  # biases
        values = 0.05 * rng.standard_normal(shape)
    else:
        values = WEIGHT_STD * rng.standard_normal(shape)
    return values.astype(np.float32)


def build(arch: str, out_dir: Path, tokenizer_dir: Path) -> None:
    """Write the tiny ``arch`` model as a float32 safetensors directory at ``out_dir``.

    ``tokenizer_dir`` holds the embedded model's tokenizer (tokenizer.json and config).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if arch not in CONFIGS:
        raise ValueError(f"tiny model architecture {arch!r} is not one of {sorted(CONFIGS)}")
    params = dict(CONFIGS[arch])
    config = AutoConfig.for_model(params.pop("model_type"), **params)
    torch.manual_seed(SEED)  # the draws below overwrite every parameter anyway
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied weights appear once
            param.copy_(torch.from_numpy(_draw(name, tuple(param.shape))))
    model.eval()
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)

