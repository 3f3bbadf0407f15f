"""Content hashes: of a file, of a directory tree, of a JSON-able payload.

Every cache key and fingerprint in the project is one of these, so two places never
hash the same thing two ways.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: Path, _memo: dict[tuple[str, int, int], str] = {}) -> str:  # noqa: B006
    """SHA-256 of a file, memoised per process by (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _memo:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _memo[key] = digest.hexdigest()
    return _memo[key]


def tree_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (names and contents)."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digest(payload: Any) -> str:
    """SHA-256 of a JSON-able payload (keys sorted): the one cache-key scheme."""
    return text_sha256(json.dumps(payload, sort_keys=True))
