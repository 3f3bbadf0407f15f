"""Content hashes: of a file, of a directory tree, of a JSON-able payload, of the code a
module runs.

Every cache key and fingerprint in the project is one of these, so two places never
hash the same thing two ways.
"""

from __future__ import annotations

import ast
import functools
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


@functools.lru_cache(maxsize=1024)
def _package_imports(path: Path, mtime_ns: int, size: int, package: str) -> tuple[str, ...]:
    """The modules of ``package`` that the source file ``path`` imports (``ast``, nothing
    imported). Parsed once per file version (``mtime_ns``, ``size``) in a process: a warm
    run asks for the same code's digest once per oracle model."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == package:
                found.append(node.module)
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.split(".")[0] == package)
    return tuple(found)


def source_sha256(module: str) -> str:
    """SHA-256 of a module's source and of every module of its package it imports, directly
    or not (read with ``ast``, nothing imported): the code a result made by ``module``
    depends on. A result keyed by it is made again when any of that code changes."""
    package = module.split(".")[0]
    root = Path(__file__).parents[1]  # this package's folder (pytest_groundtruth/)
    if root.name != package:
        raise ValueError(f"source_sha256: {module!r} is not a module of {root.name}")

    def path_of(name: str) -> Path | None:
        base = root.parent.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = path_of(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        stat = path.stat()
        todo.extend(_package_imports(path, stat.st_mtime_ns, stat.st_size, package))
    out = hashlib.sha256()
    for name in sorted(seen):
        out.update(f"{name}:{file_sha256(seen[name])}\n".encode())
    return out.hexdigest()
