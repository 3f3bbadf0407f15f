"""Crash-safe file writes and cross-process locks.

Every file this project produces (oracles, artifacts, cached generations, reports) is
written through :func:`atomic_write_bytes` or :func:`atomic_path`: the content goes to a
temporary file in the same directory, is flushed and fsynced, then renamed over the
target. An interrupted run leaves either the old file or the new one, never half of
one. :func:`locked` serialises producers of the same file across processes (pytest-xdist
workers), so an expensive artifact is built once.

A process killed between the fsync and the rename leaves its temporary behind. The
temporary's name says whose it is (``.<name>.<random>.gt<pid>-<host>.partial``), so a
later write of the same file, or :func:`remove_stale` over a folder, removes the
temporaries whose writer is gone (on this host: the process no longer exists; from
another host, or of an older naming: after :data:`STALE_SECONDS`), never one still
being written.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

STALE_SECONDS = 24 * 3600  # a temporary whose writer cannot be asked is stale after a day
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # names no machine
_OWNED = re.compile(r"\.gt(\d+)-([0-9a-f]{8})\.partial$")


def _owner_tag() -> str:
    return f".gt{os.getpid()}-{HOST}.partial"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The temporary name starts with ``.`` and ends with ``.partial`` so that a crash
    leaves an obviously incomplete file that no reader mistakes for the real one.
    If the body raises, the temporary file is removed and ``path`` is untouched.
    A directory may be produced at the temporary path too; it is renamed as a whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(glob.escape(f".{path.name}.") + "*.partial"):
        _remove_if_stale(stale)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_owner_tag(), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the body creates it (as a file or a directory)
    try:
        yield tmp
        if tmp.is_file():
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
        if path.is_dir() and tmp.is_dir():
            _replace_dir(tmp, path)
        else:
            tmp.replace(path)
    finally:
        _remove(tmp)


def _replace_dir(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old{_owner_tag()}")
    target.replace(old)
    new.replace(target)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` of this host no longer exists."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def discard(path: Path) -> None:
    """Remove a cache entry (file or folder) so that no reader sees half of it: renamed
    first to a temporary of this process (atomic), then deleted; a crash in between
    leaves a temporary that :func:`remove_stale` clears."""
    doomed = path.with_name(f".{path.name}.del{_owner_tag()}")
    try:
        path.replace(doomed)
    except FileNotFoundError:
        return
    _remove(doomed)


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is one of our temporaries whose writer is gone."""
    if not (path.name.startswith(".") and path.name.endswith(".partial")):
        return False
    found = _OWNED.search(path.name)
    if found is not None and found.group(2) == HOST:
        return process_gone(int(found.group(1)))
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_SECONDS


def _remove_if_stale(path: Path) -> bool:
    if not is_stale(path):
        return False
    try:
        _remove(path)
    except OSError:  # another process cleaned it, or it is not ours to remove
        return False
    return True


def remove_stale(folder: Path) -> list[Path]:
    """Remove the stale temporaries (see the module docstring) under ``folder``."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for directory, dirs, files in os.walk(folder):
        for name in [*files, *dirs]:
            path = Path(directory) / name
            if name.endswith(".partial") and _remove_if_stale(path):
                removed.append(path)
        dirs[:] = [d for d in dirs if (Path(directory) / d).exists()]
    return removed


@contextlib.contextmanager
def locked(path: Path, timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock named after ``path`` (``<path>.lock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        yield
