"""The stand-in's ``.apr`` format (NOT aprender's APR v2 format, which stores quantized
tensors in its own binary layout), and the import sources it reads.

A zip archive (stored, uncompressed) holding

- ``apr-standin.json``: ``{"format": "apr-standin", "format_version": 1, "standin":
  true, "quantization": "int8"|"int4"|"fp16"|"none", "source": ..., "source_kind":
  "hf"|"safetensors"|"directory"|"gguf", "tokenizer_pre": ..., "created_by": ...}``
- ``model/``: the float32 Hugging Face model directory (config.json, model.safetensors,
  tokenizer files). The quantization is applied when the file is loaded, so the file is
  self-contained: deleting the source does not break it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_groundtruth.models.sources import HF_ALLOW_PATTERNS, gguf_to_hf_dir
from standins.apr.faults import StandinError

FORMAT = "apr-standin"
FORMAT_VERSION = 1
MANIFEST = "apr-standin.json"
MODEL_PREFIX = "model/"
# Files of a Hugging Face model directory that go into the archive (sources.py's list).
_MODEL_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja")


def tokenizer_pre(config: dict[str, Any], gguf_pre: str | None) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for GGUF export.

    From the source GGUF when there is one; otherwise a heuristic on the config (the
    SmolLM tokenizer has 49152 entries; qwen2 and gpt2 name themselves), overridable
    with ``APR_STANDIN_TOKENIZER_PRE``. The real apr decides this itself.
    """
    override = os.environ.get("APR_STANDIN_TOKENIZER_PRE")
    if override:
        return override
    if gguf_pre:
        return gguf_pre
    model_type = config.get("model_type")
    if config.get("vocab_size") == 49152:
        return "smollm"
    if model_type == "qwen2":
        return "qwen2"
    if model_type == "gpt2":
        return "gpt-2"
    return "default"


def gguf_string(path: Path, key: str) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get(key)
    return str(field.contents()) if field is not None else None


@contextlib.contextmanager
def source_directory(source: str) -> Iterator[tuple[Path, str, str | None]]:
    """Yield (float32 HF directory, source kind, GGUF pre-tokenizer) for an import source."""
    if source.startswith("hf://"):
        from huggingface_hub import snapshot_download

        repo = source[len("hf://"):]
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        try:
            snapshot = snapshot_download(
                repo, allow_patterns=HF_ALLOW_PATTERNS, local_files_only=offline
            )
        except Exception as exc:  # the hub's many error types: report, do not trace
            raise StandinError(f"cannot fetch {source}: {exc}") from exc
        yield Path(snapshot), "hf", None
        return
    file = Path(source)
    if not file.exists():
        raise StandinError(f"{source}: no such file or directory")
    if file.suffix == ".gguf":
        with tempfile.TemporaryDirectory(prefix="apr-standin-gguf-") as tmp:
            directory = Path(tmp) / "model"
            gguf_to_hf_dir(file, directory)
            yield directory, "gguf", gguf_string(file, "tokenizer.ggml.pre")
        return
    if file.is_dir():
        yield file, "directory", None
        return
    if file.suffix == ".safetensors":
        if not (file.parent / "config.json").is_file():
            raise StandinError(f"{source}: no config.json beside the safetensors file")
        yield file.parent, "safetensors", None
        return
    raise StandinError(f"{source}: unsupported source (hf://ID, .safetensors, directory, .gguf)")


def write_archive(directory: Path, out: Path, quant: str, source: str, kind: str,
                  gguf_pre: str | None, created_by: str) -> dict[str, Any]:
    config = json.loads((directory / "config.json").read_text())
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "standin": True,
        "note": "pytest-groundtruth stand-in archive; the real aprender APR format differs",
        "quantization": quant,
        "source": source,
        "source_kind": kind,
        "architecture": config.get("model_type"),
        "tokenizer_pre": tokenizer_pre(config, gguf_pre),
        "created_by": created_by,
    }
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and (p.suffix in _MODEL_SUFFIXES or p.name.startswith("tokenizer"))
    )
    if not any(p.suffix == ".safetensors" for p in files):
        raise StandinError(f"{directory}: no safetensors weights to import")
    tmp = out.with_name(f".{out.name}.standin-tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
            for file in files:
                archive.write(file, MODEL_PREFIX + file.name)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise StandinError(
            f"{path}: not an APR file this stand-in reads ({FORMAT} v{FORMAT_VERSION}): {exc}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StandinError(f"{path}: not an {FORMAT} archive")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StandinError(
            f"{path}: {FORMAT} version {manifest.get('format_version')} "
            f"(this stand-in reads v{FORMAT_VERSION}); import it again"
        )
    return manifest


def model_name(manifest: dict[str, Any]) -> str:
    """A name for the model from its import source (hub repo, directory or file stem)."""
    source = str(manifest.get("source", ""))
    if source.startswith("hf://"):
        name = source.rstrip("/").rsplit("/", 1)[-1]
    else:
        file = Path(source)
        name = file.parent.name if file.suffix == ".safetensors" else file.stem
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".") or "model"


@contextlib.contextmanager
def open_model(path: Path) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """Yield (loadable path, quantization, manifest) for an .apr archive or a GGUF file."""
    if path.suffix == ".gguf":
        yield path, "none", {"source": str(path), "tokenizer_pre": None}
        return
    manifest = read_manifest(path)
    with tempfile.TemporaryDirectory(prefix="apr-standin-") as tmp:
        directory = Path(tmp) / model_name(manifest)  # GGUF export's general.name
        directory.mkdir()
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.startswith(MODEL_PREFIX) and "/" not in member[len(MODEL_PREFIX):]:
                    target = directory / member[len(MODEL_PREFIX):]
                    with archive.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
        yield directory, str(manifest["quantization"]), manifest
