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
import errno
import glob
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from pytest_groundtruth.core.failures import CacheUnusable

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
    if _is_temporary(path):  # a writer inside another's temporary: that one is atomic
        yield path  # (a nested ``..name.X.partial.Y.partial`` would outlive a kill)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
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


_TEMPORARY = re.compile(r"^\.(.+)\.[^.]+\.gt\d+-[0-9a-f]{8}\.partial$")


def final_path(path: Path) -> Path:
    """The file an :func:`atomic_path` temporary becomes (``path`` itself otherwise): what
    a recipe names, so that it reads the same in every run."""
    found = _TEMPORARY.match(path.name)
    return path.with_name(found.group(1)) if found else path


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and _OWNED.search(path.name) is not None


def sweep(path: Path) -> list[Path]:
    """Remove the stale temporaries of ``path`` beside it (its own, any nesting depth of
    dots: ``.artifact.gguf.X.partial`` and a nested ``..artifact.gguf.X.partial.Y.partial``
    that older versions wrote)."""
    removed = []
    with contextlib.suppress(OSError):
        for stale in path.parent.glob(".*" + glob.escape(f"{path.name}.") + "*.partial"):
            if stale.name.lstrip(".").startswith(f"{path.name}.") and _remove_if_stale(stale):
                removed.append(stale)
    return removed


def _replace_dir(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old{_owner_tag()}")
    target.replace(old)
    new.replace(target)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
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
    """Hold an inter-process lock named after ``path`` (``<path>.lock``).

    In a folder nobody can write (a read-only file system, a cache restored read-only in
    CI) there is nothing to serialise: no process can produce the file, so the body runs
    without a lock, reads what is there, and a write it attempts fails with a
    :class:`~pytest_groundtruth.core.failures.CacheUnusable` from its writer."""
    lock = Path(str(path) + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        if not is_read_only(exc):
            raise
        yield
        return
    with FileLock(str(lock), timeout=timeout):
        yield


READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NEARLY_FULL = 1 << 20  # bytes free under which a failed write is put down to a full disk


def _errnos(exc: BaseException) -> Iterator[int]:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            yield seen.errno
        seen = seen.__cause__ or seen.__context__


def is_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a write refused by the file system."""
    return any(e in READ_ONLY_ERRNOS for e in _errnos(exc))


def cache_problem(folder: Path, exc: BaseException, doing: str) -> CacheUnusable | None:
    """The named error when ``exc``, raised while ``doing`` in ``folder``, comes from a
    full disk (ENOSPC, EDQUOT, or under :data:`NEARLY_FULL` bytes left: a short write
    such as numpy's "3145728 requested and 1654520 written" carries no errno) or a
    read-only folder; None for any other failure."""
    codes = set(_errnos(exc))
    text = str(exc)
    if os.strerror(errno.ENOSPC) in text or "os error 28" in text:  # Rust writers' errors
        codes.add(errno.ENOSPC)
    try:
        usage = shutil.disk_usage(_existing(folder))
    except OSError:
        usage = None
    if codes & set(FULL_ERRNOS) or (usage is not None and usage.free < NEARLY_FULL):
        where = f" ({usage.free} of {usage.total} bytes free)" if usage is not None else ""
        return CacheUnusable(
            f"no space left on the disk holding {folder}{where} while {doing} "
            f"(ENOSPC; {type(exc).__name__}: {exc}): free space there or point "
            "--gt-cache-dir=DIR (cache_dir) at a disk with room", errno.ENOSPC)
    if codes & set(READ_ONLY_ERRNOS):
        return CacheUnusable(
            f"the cache folder {folder} is not writable "
            f"({os.strerror(min(codes & set(READ_ONLY_ERRNOS)))}) "
            f"and {doing} needs to write: a warm read-only cache is read as it is, but "
            "what is missing from it must be made; make the folder writable or point "
            "--gt-cache-dir=DIR (cache_dir) at a writable one", errno.EROFS)
    return None


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
