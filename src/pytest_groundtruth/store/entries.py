"""The cache's entries, and trimming the cache to a size, least recently used first.

Layout under the cache root; an *entry* is what is built, used and removed as a whole:

=====================================  =====================================================
``models/<name>-<key>/``               a model folder (converted, tiny, draft, LoRA, adapter)
``artifacts/<model>/<label>-<key>/``   an artifact and its manifest
``results/<kind>/<key>.json``          one engine result
``llama.cpp/<version>-<hash>/``        llama.cpp's converter, unpacked from its sdist
``other-tools/<name>/``                other tools' files (``groundtruth falsify``)
``faults/<key>.gguf`` (+ ``.json``)    a broken copy of an artifact (``falsify``)
=====================================  =====================================================

Not entries: ``sdist/`` (fetched by hand, not rebuilt offline), ``leases/``, ``builds.log``,
the ``*.lock`` files beside entries (a process may be waiting on one) and temporaries
(``.*.partial``: :func:`~pytest_groundtruth.core.atomic.remove_stale`).

An entry's last use is its modification time, set on each use
(:func:`~pytest_groundtruth.core.usage.touch`). :func:`select` is the pure choice: the
least recently used first, until the cache fits, never an entry used since a live
session began. :func:`trim` applies it, each removal under the entry's lock (an entry
being built is skipped) and only if the entry was not used since it was listed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import Timeout

from pytest_groundtruth.core.atomic import HOST, discard, locked
from pytest_groundtruth.core.usage import CLOCK_SLACK, live_leases

# Folder under the root -> how deep its entries lie.
DEPTHS = {"models": 1, "artifacts": 2, "results": 2, "llama.cpp": 1, "other-tools": 1,
          "faults": 1}
COMPANIONS = {"faults": (".gguf", ".json")}  # a fault's note goes with its file


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str  # the folder under the root it lies in (DEPTHS)
    size: int  # bytes, with its companions
    last_used: float  # seconds since the epoch
    companions: tuple[Path, ...] = ()


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except FileNotFoundError:
                continue
    return total


def _listed(folder: Path, depth: int) -> Iterator[Path]:
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.endswith(".lock"):
            continue
        if depth > 1:
            if path.is_dir() and not path.is_symlink():
                yield from _listed(path, depth - 1)
        else:
            yield path


def entries(root: Path, kinds: Sequence[str] = tuple(DEPTHS)) -> list[Entry]:
    """Every entry of the cache at ``root`` of the given kinds, with its size and last use."""
    out = []
    for kind in kinds:
        pair = COMPANIONS.get(kind)
        for path in _listed(root / kind, DEPTHS[kind]):
            companions: tuple[Path, ...] = ()
            if pair is not None:
                if path.suffix == pair[1] and path.with_suffix(pair[0]).exists():
                    continue  # listed with its main file
                companions = tuple(p for p in (path.with_suffix(pair[1]),)
                                   if path.suffix == pair[0] and p.exists())
            try:
                size = _size(path) + sum(_size(p) for p in companions)
                used = path.lstat().st_mtime
            except FileNotFoundError:
                continue  # removed meanwhile
            out.append(Entry(path, kind, size, used, companions))
    return out


def select(found: Sequence[Entry], max_size: int, in_use_since: float | None
           ) -> tuple[list[Entry], list[Entry]]:
    """(what to remove, what is in the way but in use): least recently used first, until
    the total is at most ``max_size`` bytes; an entry used at or after ``in_use_since``
    (the start of the oldest live session; None: no session) is never chosen."""
    total = sum(e.size for e in found)
    chosen: list[Entry] = []
    in_use: list[Entry] = []
    for entry in sorted(found, key=lambda e: (e.last_used, str(e.path))):
        if total <= max_size:
            break
        if in_use_since is not None and entry.last_used >= in_use_since:
            in_use.append(entry)
            continue
        chosen.append(entry)
        total -= entry.size
    return chosen, in_use


@dataclass
class Trimmed:
    before: int  # bytes in entries before
    removed: list[Entry] = field(default_factory=list)
    in_use: list[Entry] = field(default_factory=list)  # would have gone, but in use

    @property
    def after(self) -> int:
        return self.before - sum(e.size for e in self.removed)


def in_use_since(root: Path, ignore_pid: int | None = None) -> float | None:
    """When the oldest live session on the cache began (less the clock slack), or None.
    ``ignore_pid``: a session of this host that is ending (its own lease protects
    nothing)."""
    starts = [lease.started for lease in live_leases(root)
              if not (lease.host == HOST and lease.pid == ignore_pid)]
    return min(starts) - CLOCK_SLACK if starts else None


def trim(root: Path, max_size: int, dry_run: bool = False, ignore_pid: int | None = None
         ) -> Trimmed:
    """Remove least recently used entries until the cache at ``root`` holds at most
    ``max_size`` bytes (module docstring); ``dry_run``: say what would go, remove nothing."""
    found = entries(root)
    since = in_use_since(root, ignore_pid)
    chosen, in_use = select(found, max_size, since)
    out = Trimmed(sum(e.size for e in found), in_use=in_use)
    for entry in chosen:
        if dry_run or remove(entry):
            out.removed.append(entry)
        else:
            out.in_use.append(entry)
    return out


def remove(entry: Entry) -> bool:
    """Remove ``entry`` unless it is being built or was used since it was listed."""
    try:
        with locked(entry.path, timeout=0):
            try:
                if entry.path.lstat().st_mtime != entry.last_used:
                    return False  # used meanwhile
            except FileNotFoundError:
                return True
            for path in (*entry.companions, entry.path):
                discard(path)
    except Timeout:
        return False
    return True
