"""A shared artifact cache behind the local one: any fsspec URL (``cache_url``).

Shards of one matrix on different machines (``--gt-shard``) each have their own local
cache; with ``cache_url = "s3://bucket/prefix"`` (or ``gs://``, ``file:///shared/path``,
any filesystem fsspec knows) an artifact one of them built is fetched by the others
instead of being built again. The local cache stays in front: a sound local entry is
used without asking the store (read-through on a local miss; write-back of what this
machine built).

Layout under the URL, every object written once::

    blobs/<sha256>                      a file's bytes, named by their SHA-256
    index/<artifact key>.json           the artifact: its files' hashes and manifest
    tmp/<random>.<sha256>.partial       an upload in progress (never read)

No lock spans machines, so nothing is ever overwritten in place:

* a file is uploaded to ``tmp/`` and then copied (S3: a server-side copy, which makes
  the whole object appear at once) or renamed (a shared path) to ``blobs/<sha256>``; a
  reader verifies the SHA-256 of every blob it downloads;
* the index entry is the commit, written last and only if absent: S3's conditional put
  (``If-None-Match: *``, through s3fs's ``mode="create"``), a hard link on a shared path.
  When two shards race for one artifact both may build it, exactly one index entry
  wins, and the loser replaces its own build with the winner's files, so both end with
  identical bytes. On a filesystem with neither (other fsspec backends), the entry is
  written only when absent, with a window in which two writers can both succeed: each
  entry is still complete and verified, the last one stays;
* an upload killed half-way leaves at most a ``tmp/`` object that no index names (a
  shared path: the partly copied file; S3: nothing, or for a file over 100 MB an
  incomplete multipart upload, which S3 never shows as an object and a bucket
  lifecycle rule aborts): it is ignored, and removed by the next publisher once it is
  older than :data:`STALE_SECONDS` (an upload still going on is younger). A loser's
  blob that no entry names stays (it may be another artifact's identical file).

Credentials and endpoints come from the environment, as fsspec and the backend read
them (S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for
MinIO, Ceph, R2, ...; ``FSSPEC_S3_*``): none are written in configuration files.
fsspec and the backend's package (``pip install 'pytest-groundtruth[remote]'``) are
imported when the store is first used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_groundtruth.core.atomic import atomic_path
from pytest_groundtruth.core.hashing import file_sha256

STALE_SECONDS = 3600.0  # a tmp/ upload untouched this long has been abandoned
LOCAL = ("file", "local")


class RemoteError(RuntimeError):
    """The store cannot be used (names the URL and what to do)."""


@dataclass(frozen=True)
class Published:
    """The outcome of :meth:`RemoteCache.publish`."""

    won: bool  # our index entry is the one stored
    manifest: dict[str, Any]  # the stored entry's manifest (ours or the winner's)


def artifact_files(target: Path) -> dict[str, str]:
    """Relative path ("" for a single file) -> SHA-256 of each file of an artifact."""
    if target.is_file():
        return {"": file_sha256(target)}
    return {p.relative_to(target).as_posix(): file_sha256(p)
            for p in sorted(target.rglob("*")) if p.is_file()}


class RemoteCache:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._opened: tuple[Any, str] | None = None
        self.fetched = 0  # artifacts this process downloaded
        self.published = 0  # index entries this process wrote
        self._cleaned = False

    # ------------------------------------------------------------------ the filesystem

    def _fs(self) -> tuple[Any, str]:
        if self._opened is None:
            try:
                import fsspec  # only here: a run without cache_url never imports it
            except ImportError:
                raise RemoteError(f"cache_url {self.url!r} needs fsspec (and the backend's "
                                  "package, e.g. s3fs): pip install "
                                  "'pytest-groundtruth[remote]'") from None
            try:
                self._opened = fsspec.core.url_to_fs(self.url)
            except (ImportError, ValueError) as exc:
                raise RemoteError(f"cache_url {self.url!r}: {exc}") from None
        return self._opened

    def _path(self, *parts: str) -> str:
        _, root = self._fs()
        return "/".join([root.rstrip("/"), *parts])

    @property
    def _local(self) -> bool:
        fs, _ = self._fs()
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        return protocol in LOCAL

    # ------------------------------------------------------------------ reading

    def entry(self, key: str) -> dict[str, Any] | None:
        """The index entry of ``key``, or None when there is none (or it is unreadable)."""
        fs, _ = self._fs()
        try:
            data = json.loads(fs.cat_file(self._path("index", f"{key}.json")))
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # never written by us: ignored
        ok = (isinstance(data, dict) and data.get("key") == key
              and isinstance(data.get("files"), dict) and isinstance(data.get("manifest"), dict))
        return data if ok else None

    def fetch(self, key: str, target: Path) -> dict[str, Any] | None:
        """Download ``key``'s artifact to ``target`` (atomically, every file's SHA-256
        checked); its manifest, or None when the store has no sound entry."""
        entry = self.entry(key)
        if entry is None:
            return None
        fs, _ = self._fs()
        files: dict[str, str] = entry["files"]
        with atomic_path(target) as tmp:
            for rel, sha in sorted(files.items()):
                dest = tmp / rel if rel else tmp
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fs.get_file(self._path("blobs", sha), str(dest))
                except FileNotFoundError:
                    raise RemoteError(f"{self.url}: index/{key}.json names blobs/{sha}, "
                                      "which is missing") from None
                if file_sha256(dest) != sha:
                    raise RemoteError(f"{self.url}: blobs/{sha} does not hash to its name "
                                      "(corrupted in the store: delete it)")
        self.fetched += 1
        return dict(entry["manifest"])

    # ------------------------------------------------------------------ writing

    def publish(self, key: str, target: Path, manifest: dict[str, Any]) -> Published:
        """Upload ``target``'s files and commit ``key``'s entry unless one exists."""
        self.clean_stale()
        files = artifact_files(target)
        for rel, sha in sorted(files.items()):
            self._put_blob(target / rel if rel else target, sha)
        entry = {"key": key, "files": files, "manifest": manifest}
        data = (json.dumps(entry, indent=2, sort_keys=True) + "\n").encode()
        if self._put_once(self._path("index", f"{key}.json"), data):
            self.published += 1
            return Published(True, manifest)
        stored = self.entry(key)
        if stored is None:
            raise RemoteError(f"{self.url}: index/{key}.json exists but cannot be read")
        return Published(False, dict(stored["manifest"]))

    def _put_blob(self, file: Path, sha: str) -> None:
        fs, _ = self._fs()
        final = self._path("blobs", sha)
        if fs.exists(final):
            return  # content-addressed: the same bytes are there
        tmp = self._path("tmp", f"{uuid.uuid4().hex}.{sha}.partial")
        if self._local:
            for folder in (tmp, final):
                Path(folder).parent.mkdir(parents=True, exist_ok=True)
        fs.put_file(str(file), tmp)
        try:
            if self._local:
                Path(tmp).replace(final)  # a rename: the file appears whole
            else:
                fs.copy(tmp, final)  # server-side: the object appears whole
        finally:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(tmp)

    def _put_once(self, path: str, data: bytes) -> bool:
        """Write ``path`` only if it does not exist; whether this call wrote it."""
        fs, _ = self._fs()
        if self._local:
            tmp = self._path("tmp", f"{uuid.uuid4().hex}.index.partial")
            for folder in (tmp, path):
                Path(folder).parent.mkdir(parents=True, exist_ok=True)
            Path(tmp).write_bytes(data)
            try:
                os.link(tmp, path)  # atomic, and fails when the entry exists
                return True
            except FileExistsError:
                return False
            finally:
                Path(tmp).unlink(missing_ok=True)
        if "s3" in _protocols(fs):
            try:
                fs.pipe_file(path, data, mode="create")  # If-None-Match: *
                return True
            except FileExistsError:
                return False
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True

    def clean_stale(self, older_than: float = STALE_SECONDS) -> list[str]:
        """Remove ``tmp/`` uploads older than ``older_than`` seconds (once per process
        unless called directly); the keys removed."""
        if self._cleaned and older_than == STALE_SECONDS:
            return []
        self._cleaned = True
        fs, _ = self._fs()
        removed = []
        try:
            listing = fs.ls(self._path("tmp"), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        now = time.time()
        for info in listing:
            modified = _mtime(info)
            if modified is not None and now - modified > older_than:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(info["name"])
                    removed.append(str(info["name"]))
        return removed


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _mtime(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "updated", "last_modified"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return dt.datetime.fromisoformat(value).timestamp()
    return None
