"""``cache_url``: a shared, write-once artifact store behind the local cache.

Against a real S3-compatible server on 127.0.0.1: moto's server mode (``moto[server]``,
from PyPI, a dev dependency), started as its own process by the ``s3_url`` fixture. It
is picked because it installs with pip alone (no binary download: MinIO's server is a Go
binary from outside the package registries) and implements what the store relies on:
S3's conditional put (``If-None-Match: *``, answered 412), server-side copy, listings
with modification times. The same tests run on a shared path (``file://``).

Two processes ("shards", each with its own local cache) race for one artifact whose
build writes different random bytes each time: both build, exactly one index entry is
stored, and both end with the stored bytes; meanwhile a watcher reads every object that
appears under a final key (``blobs/``, ``index/``) and finds it whole. An upload killed
half-way leaves nothing under a final key; a partial temporary object is never read and
is removed once stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_groundtruth.core.hashing import file_sha256
from pytest_groundtruth.store.artifacts import ArtifactCache, Recipe
from pytest_groundtruth.store.remote import RemoteCache

fsspec = pytest.importorskip("fsspec", reason="pip install 'pytest-groundtruth[remote]'")
BUCKET = "gt-shared"
pytestmark = pytest.mark.slow  # a server process and child processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a process of its own); its endpoint URL."""
    pytest.importorskip("moto.server", reason="pip install 'moto[server]' (a dev dependency)")
    pytest.importorskip("s3fs", reason="pip install 'pytest-groundtruth[remote]'")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"moto server did not start on port {port}: {err[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(params=["s3", "file"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty store: a prefix in the S3 server's bucket, or a shared folder."""
    if request.param == "file":
        return f"file://{tmp_path / 'shared'}"
    endpoint = request.getfixturevalue("s3_server")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    with contextlib.suppress(FileExistsError):
        fs.call_s3("create_bucket", Bucket=BUCKET)
    return f"s3://{BUCKET}/{tmp_path.name}"


def fs_of(url: str) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return fs, root


def listing(url: str, folder: str) -> list[str]:
    fs, root = fs_of(url)
    try:
        return sorted(str(p) for p in fs.ls(f"{root}/{folder}", detail=False, refresh=True))
    except FileNotFoundError:
        return []


def recipe(build_count: list[int], size: int = 1 << 20) -> Recipe:
    def build(out: Path) -> str:
        build_count.append(1)
        out.write_bytes(os.urandom(size))  # a different file every build
        return "random bytes"

    return Recipe("m", "rand", {"what": "random"}, ".bin", build, lambda p: None)


def test_built_once_then_fetched_by_another_machine(store_url: str, tmp_path: Path) -> None:
    builds: list[int] = []
    first = ArtifactCache(tmp_path / "a", remote=RemoteCache(store_url))
    built = first.get(recipe(builds))
    assert builds == [1]
    assert first.remote is not None
    assert first.remote.published == 1

    other_remote = RemoteCache(store_url)
    other = ArtifactCache(tmp_path / "b", remote=other_remote)
    fetched = other.get(recipe(builds))
    assert builds == [1]  # not built again
    assert other_remote.fetched == 1
    assert other.built == 0
    assert fetched.sha256 == built.sha256 == file_sha256(fetched.path)
    assert fetched.path.read_bytes() == built.path.read_bytes()
    assert fetched.recipe == "random bytes"
    assert other.get(recipe(builds)).sha256 == built.sha256  # now local: no fetch
    assert other_remote.fetched == 1
    assert len(listing(store_url, "index")) == 1
    assert listing(store_url, "tmp") == []

    # --gt-no-cache (a refresh token): the store is neither read nor written
    fresh = ArtifactCache(tmp_path / "c", refresh_token="t", remote=RemoteCache(store_url))
    assert fresh.get(recipe(builds)).sha256 != built.sha256
    assert builds == [1, 1]


RACER = """
import json, os, sys, time
from pathlib import Path
from pytest_groundtruth.store.artifacts import ArtifactCache, Recipe
from pytest_groundtruth.store.remote import RemoteCache

root, url, barrier, me = sys.argv[1:5]

def build(out):
    Path(barrier, me).touch()
    while len(list(Path(barrier).iterdir())) < 2:  # both shards are building now
        time.sleep(0.01)
    out.write_bytes(os.urandom(4 << 20) + me.encode())
    return "built by " + me

remote = RemoteCache(url)
cache = ArtifactCache(Path(root), remote=remote)
got = cache.get(Recipe("m", "race", {"what": "race"}, ".bin", build, lambda p: None))
print(json.dumps({"sha256": got.sha256, "file": str(got.path), "recipe": got.recipe,
                  "published": remote.published, "built": cache.built}))
"""


class Watcher(threading.Thread):
    """Reads every object under the final keys while the race goes on: each blob must
    hash to its name, each index entry parse and name blobs that exist."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.seen: set[str] = set()

    def run(self) -> None:
        fs, root = fs_of(self.url)
        while not self.stop.is_set():
            for path in listing(self.url, "blobs"):
                with contextlib.suppress(FileNotFoundError):
                    data = fs.cat_file(path)
                    if hashlib.sha256(data).hexdigest() != path.rsplit("/", 1)[1]:
                        self.problems.append(f"{path}: {len(data)} bytes, not its hash")
                    self.seen.add(path)
            for path in listing(self.url, "index"):
                entry = json.loads(fs.cat_file(path))
                self.seen.add(path)
                for sha in entry["files"].values():
                    if not fs.exists(f"{root}/blobs/{sha}"):
                        self.problems.append(f"{path} names blobs/{sha}, which is missing")
            time.sleep(0.02)


def test_two_shards_racing_for_one_artifact(store_url: str, tmp_path: Path) -> None:
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    watcher = Watcher(store_url)
    watcher.start()
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"shard{k}"),
                               store_url, str(barrier), f"shard{k}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (1, 2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    watcher.stop.set()
    watcher.join(10)

    assert [o["built"] for o in outs] == [1, 1]  # both built (neither could see the other)
    assert sorted(o["published"] for o in outs) == [0, 1]  # exactly one upload won
    index = listing(store_url, "index")
    assert len(index) == 1
    fs, _ = fs_of(store_url)
    entry = json.loads(fs.cat_file(index[0]))
    stored = entry["files"][""]
    # both end with the stored bytes (and say who built them)
    assert {o["sha256"] for o in outs} == {stored}
    assert {file_sha256(Path(o["file"])) for o in outs} == {stored}
    winner = next(o for o in outs if o["published"])
    assert {o["recipe"] for o in outs} == {winner["recipe"]}
    assert watcher.problems == []
    assert any("/index/" in p for p in watcher.seen)
    assert listing(store_url, "tmp") == []


UPLOADER = """
import sys
from pathlib import Path
from pytest_groundtruth.store.remote import RemoteCache

url, file = sys.argv[1:3]
remote = RemoteCache(url)
remote._fs()  # fsspec and the backend imported, the filesystem open
print("uploading", flush=True)
remote.publish("k" * 64, Path(file), {"sha256": "x"})
print("done", flush=True)
"""


def test_a_killed_upload_is_ignored_and_cleaned(store_url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:  # large enough that the upload is still going when killed
        for _ in range(24):
            fh.write(os.urandom(8 << 20))
    script = tmp_path / "uploader.py"
    script.write_text(UPLOADER)
    proc = subprocess.Popen([sys.executable, str(script), store_url, str(big)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "uploading"
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert listing(store_url, "index") == []  # nothing committed
    assert listing(store_url, "blobs") == []  # nothing whole under a final key

    # What a killed uploader leaves behind in the worst case: a partial temporary object.
    fs, root = fs_of(store_url)
    partial = f"{root}/tmp/0123abcd.{'f' * 64}.partial"
    if store_url.startswith("file://"):
        Path(partial).parent.mkdir(parents=True, exist_ok=True)
    fs.pipe_file(partial, b"half of a file")
    builds: list[int] = []
    cache = ArtifactCache(tmp_path / "local", remote=RemoteCache(store_url))
    built = cache.get(recipe(builds))  # ignores it: builds, publishes
    assert builds == [1]
    assert len(listing(store_url, "index")) == 1
    left = listing(store_url, "tmp")  # the planted one, and the killed upload's own, if any
    assert partial in left  # too young to be someone's dead upload: kept
    remote = RemoteCache(store_url)
    assert sorted(remote.clean_stale(older_than=0.0)) == left
    assert listing(store_url, "tmp") == []
    again = ArtifactCache(tmp_path / "other", remote=RemoteCache(store_url))
    assert again.get(recipe(builds)).sha256 == built.sha256
    assert builds == [1]


def test_a_store_that_cannot_be_opened_names_the_url(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, remote=RemoteCache("nosuchscheme://bucket/x"))
    with pytest.raises(RuntimeError, match="nosuchscheme://bucket/x"):
        cache.get(recipe([]))
