"""When a cache entry was last used, and which sessions are using the cache now.

Least-recently-used eviction needs a last-used time, and the file system's access time
is no such thing (``noatime`` and ``relatime`` mounts update it at most once a day, or
never). So every use of an entry sets the entry's own modification time
(:func:`touch`: one ``utime`` call on the entry's folder or file; nothing reads a
folder's modification time otherwise, and a file entry is written once).

A session that uses the cache holds a lease (:class:`Lease`): a file
``leases/<host>-<pid>.json`` under the cache root, written when it starts. An entry
used at or after the start of a live session's lease is in use: eviction leaves it. A
lease whose process is gone (on this host) protects nothing and is removed; a lease
from another host (a shared cache) counts until it is :data:`STALE_SECONDS` old, as the
temporaries of :mod:`~pytest_groundtruth.core.atomic` do.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pytest_groundtruth.core.atomic import HOST, STALE_SECONDS, atomic_write_text, process_gone

LEASES = "leases"
# A file system may store times coarser than the clock (FAT: 2 s): an entry touched just
# after a lease began may read as just before it.
CLOCK_SLACK = 2.0
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from ``5G``, ``500M``, ``1.5T``, ``123456`` (K/M/G/T are powers of 1024;
    ``GB``, ``GiB`` and ``G`` mean the same). Raises ValueError with the rule."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text} is negative")
        return text
    match = _SIZE.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with K, M, G or T: "
                         "e.g. 500M, 5G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def show_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit]:
            return f"{size / _UNITS[unit]:.1f}{unit}"
    return f"{size}B"


def touch(path: Path) -> None:
    """Record a use of the cache entry at ``path`` (its folder or file): now."""
    with contextlib.suppress(OSError):  # a read-only cache still serves its entries
        os.utime(path)


@dataclass(frozen=True)
class LeaseInfo:
    path: Path
    pid: int
    host: str
    started: float


class Lease:
    """This process's lease on the cache at ``root`` (module docstring); released by
    :meth:`release` or at exit. One per process and cache: taking it again is a no-op."""

    _held: ClassVar[dict[Path, Lease]] = {}

    def __init__(self, root: Path) -> None:
        self.path = root / LEASES / f"{HOST}-{os.getpid()}.json"
        self.started = time.time()
        self.count = 0

    @classmethod
    def take(cls, root: Path) -> Lease:
        key = root.resolve()
        lease = cls._held.get(key)
        if lease is None or lease.path.name != f"{HOST}-{os.getpid()}.json":  # forked
            lease = cls(root)
            with contextlib.suppress(OSError):  # a read-only cache: nothing to protect
                atomic_write_text(lease.path, json.dumps(
                    {"pid": os.getpid(), "host": HOST, "started": lease.started}) + "\n")
            cls._held[key] = lease
            atexit.register(lease._drop)
        lease.count += 1
        return lease

    def release(self) -> None:
        self.count -= 1
        if self.count <= 0:
            self._drop()

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        for key, lease in list(self._held.items()):
            if lease is self:
                del self._held[key]


def live_leases(root: Path, now: float | None = None) -> list[LeaseInfo]:
    """The leases of live sessions on the cache at ``root``; a dead session's lease is
    removed."""
    now = time.time() if now is None else now
    found = []
    for file in sorted((root / LEASES).glob("*.json")):
        try:
            data = json.loads(file.read_text())
            info = LeaseInfo(file, int(data["pid"]), str(data["host"]), float(data["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written; a broken one protects nothing
        gone = (process_gone(info.pid) if info.host == HOST
                else now - info.started > STALE_SECONDS)
        if gone:
            with contextlib.suppress(OSError):
                file.unlink()
            continue
        found.append(info)
    return found
