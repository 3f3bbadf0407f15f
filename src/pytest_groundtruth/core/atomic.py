"""Crash-safe file writes and cross-process locks.

Every file this project produces (oracles, artifacts, cached generations, reports) is
written through :func:`atomic_write_bytes` or :func:`atomic_path`: the content goes to a
temporary file in the same directory, is flushed and fsynced, then renamed over the
target. An interrupted run leaves either the old file or the new one, never half of
one. :func:`locked` serialises producers of the same file across processes (pytest-xdist
workers), so an expensive artifact is built once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock


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
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
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
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
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


@contextlib.contextmanager
def locked(path: Path, timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock named after ``path`` (``<path>.lock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        yield
