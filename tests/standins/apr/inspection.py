"""``apr inspect``: what the stand-in reports about a stand-in .apr archive or a GGUF file.

Reads headers only (zip members, the safetensors header, GGUF metadata): no torch.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

from standins.apr.archive import (
    FORMAT,
    FORMAT_VERSION,
    MODEL_PREFIX,
    read_manifest,
)


def _safetensors_count(data: bytes) -> int:
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    return len([k for k in header if k != "__metadata__"])


def inspect_gguf(path: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return field.contents() if field is not None else None

    arch = value("general.architecture")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return {
        "architecture": arch,
        "num_layers": value(f"{arch}.block_count"),
        "num_heads": value(f"{arch}.attention.head_count"),
        "hidden_size": value(f"{arch}.embedding_length"),
        "vocab_size": len(tokens.data) if tokens is not None else None,
        "tensor_count": len(reader.tensors),
        "format": "gguf",
        "metadata": {"general.name": value("general.name"),
                     "tokenizer.ggml.pre": value("tokenizer.ggml.pre"), "standin": True},
    }


def inspect_file(path: Path) -> dict[str, Any]:
    """The inspect JSON of a stand-in .apr archive or a GGUF file."""
    if path.suffix == ".gguf":
        return inspect_gguf(path)
    manifest = read_manifest(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read(MODEL_PREFIX + "config.json"))
        count = 0
        for member in archive.namelist():
            if member.endswith(".safetensors"):
                with archive.open(member) as fh:
                    head = fh.read(8)
                    (size,) = struct.unpack("<Q", head)
                    count += _safetensors_count(head + fh.read(size))

    def pick(*keys: str) -> Any:
        return next((config[k] for k in keys if config.get(k) is not None), None)

    return {
        "architecture": config.get("model_type"),
        "num_layers": pick("num_hidden_layers", "n_layer"),
        "num_heads": pick("num_attention_heads", "n_head"),
        "hidden_size": pick("hidden_size", "n_embd"),
        "vocab_size": config.get("vocab_size"),
        "tensor_count": count,
        "format": f"{FORMAT} v{FORMAT_VERSION} (zip; not the aprender APR format)",
        "metadata": {k: v for k, v in manifest.items() if k not in ("format", "format_version")},
    }
