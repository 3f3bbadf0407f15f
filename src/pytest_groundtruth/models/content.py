"""What a built model is, by content: a hash per tensor, and how two builds differ.

A derived model (``tiny:``, ``truncate:``, ``lora:``) is identified by the weights its
builder wrote, not by the versions of the tools that wrote them: a new peft that merges
to the same bytes is the same model, one that merges to other bytes is another. Each
tensor is hashed from the safetensors file itself (the JSON header gives its dtype, shape
and byte range; nothing is imported, no tensor is materialised), so the file's own
metadata, tensor order and header padding, which a library may change, do not count.

The record (:data:`RECORD`) is written into the model's folder when it is built and read
on every later run (a warm run hashes nothing). :func:`weights_change` says how the
weights of two fingerprints differ, by tensor name and largest absolute difference,
when the older build is still in the cache; else that the content hash differs.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.core.hashing import digest

RECORD = "groundtruth-content.json"  # {"fingerprint", "builder", "tensors": {name: sha256}}
SHOWN = 8  # differing tensors named in a message


class ContentError(ValueError):
    """A safetensors file of a model cannot be read (names the file)."""


def _header(file: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header of ``file`` and where its data starts."""
    try:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise ContentError(f"{file}: not a readable safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise ContentError(f"{file}: the safetensors header is not a JSON object")
    return header, 8 + size


def _tensors(folder: Path) -> Iterator[tuple[Path, str, dict[str, Any], int]]:
    """(file, tensor name, header entry, data start) of every tensor in ``folder``."""
    for file in sorted(folder.glob("*.safetensors")):
        header, start = _header(file)
        for name, entry in sorted(header.items()):
            if name != "__metadata__":
                yield file, name, entry, start


def tensor_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of each tensor of the model at ``folder``: its dtype, shape and bytes."""
    out: dict[str, str] = {}
    handles: dict[Path, Any] = {}
    try:
        for file, name, entry, start in _tensors(folder):
            fh = handles.get(file) or handles.setdefault(file, file.open("rb"))
            begin, end = entry["data_offsets"]
            fh.seek(start + begin)
            h = hashlib.sha256(f"{entry['dtype']}:{list(entry['shape'])}:".encode())
            left = end - begin
            while left > 0:
                block = fh.read(min(left, 1 << 22))
                if not block:
                    raise ContentError(f"{file}: tensor {name!r} is cut short")
                h.update(block)
                left -= len(block)
            out[name] = h.hexdigest()
    finally:
        for fh in handles.values():
            fh.close()
    if not out:
        raise ContentError(f"{folder}: no tensors in *.safetensors")
    return out


def fingerprint(builder: str, recipe: dict[str, Any], tensors: dict[str, str]) -> str:
    """A built model's fingerprint: the builder's own version (``builder``: e.g.
    ``"tiny v2"``), what it was built from that is not a weight (``recipe``: the base's
    fingerprint, our own constants; never a tool's version) and the weights' hashes."""
    return digest({"builder": builder, "recipe": recipe, "weights": digest(tensors)})


def record(folder: Path, builder: str, recipe: dict[str, Any]) -> str:
    """Hash the weights just built at ``folder``, write the record there, return the
    fingerprint."""
    tensors = tensor_hashes(folder)
    found = fingerprint(builder, recipe, tensors)
    atomic_write_text(folder / RECORD, json.dumps(
        {"fingerprint": found, "builder": builder, "tensors": tensors}, indent=1) + "\n")
    return found


def read_record(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("fingerprint"), str) \
        and isinstance(data.get("tensors"), dict)
    return data if ok else None


def recorded_fingerprint(folder: Path) -> str | None:
    data = read_record(folder)
    return None if data is None else str(data["fingerprint"])


def find_build(models_dir: Path, wanted: str) -> Path | None:
    """The folder under ``models_dir`` (the cache's ``models/``) holding the weights of
    fingerprint ``wanted``: a derived model's record names it; a model converted from a
    GGUF file has its fingerprint (the file's SHA-256) in its folder name."""
    if not models_dir.is_dir():
        return None
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if recorded_fingerprint(folder) == wanted:
            return folder
    named = sorted(models_dir.glob(f"*-{wanted[:16]}"))
    return named[0] if named and any(named[0].glob("*.safetensors")) else None


def _hashes(folder: Path) -> dict[str, str]:
    data = read_record(folder)
    return {str(k): str(v) for k, v in data["tensors"].items()} if data else \
        tensor_hashes(folder)


def differing_tensors(old: Path, new: Path) -> list[tuple[str, float | None]]:
    """The tensors whose content differs between the models at ``old`` and ``new``, each
    with its largest absolute difference (None: added, removed or reshaped), by name."""
    a, b = _hashes(old), _hashes(new)
    names = sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))
    return [(name, _max_abs(old, new, name) if name in a and name in b else None)
            for name in names]


def _max_abs(old: Path, new: Path, name: str) -> float | None:
    import numpy as np
    from safetensors import safe_open

    def load(folder: Path) -> Any:
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="np") as fh:
                if name in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                    return fh.get_tensor(name)
        return None

    x, y = load(old), load(new)
    if x is None or y is None or x.shape != y.shape:
        return None
    return float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))


def weights_change(models_dir: Path, old_fingerprint: str, current: Path) -> str:
    """How the weights of ``old_fingerprint`` differ from the model at ``current``: the
    differing tensors by name (with the largest absolute difference) when the old build
    is still under ``models_dir``, else that the content hash differs."""
    old = find_build(models_dir, old_fingerprint)
    if old is None or old.resolve() == current.resolve():
        return (f"the weights' content hash differs (the weights of {old_fingerprint[:12]}... "
                f"are not in the cache {models_dir}, so the differing tensors cannot be named)")
    try:
        diffs = differing_tensors(old, current)
    except ContentError as exc:
        return f"the weights' content hash differs ({exc})"
    if not diffs:
        return (f"the weights are identical to {old}'s; the fingerprint differs by what the "
                "model was built from (base model, builder version)")
    total = len(_hashes(current))
    shown = ", ".join(name + ("" if diff is None else f" (max |diff| {diff:.3g})")
                      for name, diff in diffs[:SHOWN])
    more = f", and {len(diffs) - SHOWN} more" if len(diffs) > SHOWN else ""
    return f"{len(diffs)} of {total} tensors differ from {old}: {shown}{more}"
