"""Sealed folders: a cached directory that says whether it is still whole.

A folder built into the cache (a converted model: config, safetensors, tokenizer) is
sealed when complete: ``.complete`` lists each file's size, modification time and
SHA-256. :func:`sealed_problem` checks the sizes (a truncated file is caught at the cost
of a ``stat``) and re-hashes only a file whose size or time changed, so an intact folder
is confirmed without reading it, and a truncated or altered one is named and rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytest_groundtruth.core.hashing import file_sha256

SEAL = ".complete"


def seal(folder: Path) -> None:
    """Record every file of ``folder`` (written last, when the folder is complete)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SEAL):
        stat = path.stat()
        files[path.relative_to(folder).as_posix()] = {
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(path)}
    (folder / SEAL).write_text(json.dumps({"files": files}, indent=1) + "\n")


def sealed_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole, sealed folder (None when it is)."""
    try:
        files = json.loads((folder / SEAL).read_text())["files"]
        if not isinstance(files, dict) or not files:
            raise TypeError
    except FileNotFoundError:
        return f"{folder} is incomplete (no {SEAL})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder}/{SEAL} is unreadable or of an older format"
    for name, want in files.items():
        path = folder / name
        try:
            stat = path.stat()
            if stat.st_size != want["size"]:
                return (f"{path} has {stat.st_size} bytes, {want['size']} were written "
                        "(truncated or replaced)")
            if stat.st_mtime_ns != want["mtime_ns"] and file_sha256(path) != want["sha256"]:
                return f"{path} changed after it was written (SHA-256 differs)"
        except FileNotFoundError:
            return f"{path} is missing"
        except (OSError, KeyError, TypeError):
            return f"{path} cannot be checked"
    return None
