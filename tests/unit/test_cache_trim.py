"""The cache kept under a size: least recently used entries go first, never one in use.

The selection is a pure function (tested on its own); the rest runs on real files in a
temporary cache, with a real live process holding a lease and a real dead one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_groundtruth.core.atomic import HOST
from pytest_groundtruth.core.usage import LEASES, Lease, live_leases, parse_size, touch
from pytest_groundtruth.store.entries import Entry, entries, select, trim

ROOT = Path(__file__).parents[2]
DAY = 86400.0
NOW = 1_800_000_000.0


def entry(name: str, size: int, used: float) -> Entry:
    return Entry(Path(name), "models", size, used)


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(("text", "size"), [
    ("123", 123), (456, 456), ("500M", 500 << 20), ("5G", 5 << 30), ("5gb", 5 << 30),
    ("5GiB", 5 << 30), ("1.5K", 1536), (" 2 T ", 2 << 40), ("0", 0)])
def test_sizes_are_read_in_powers_of_1024(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "5X", "G", "-1", "5 G B", "1e9"])
def test_a_bad_size_says_what_a_size_is(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a size .*e\.g\. 500M, 5G"):
        parse_size(text)


def test_the_least_recently_used_go_first_until_the_cache_fits() -> None:
    found = [entry("new", 40, NOW), entry("old", 30, NOW - 3 * DAY),
             entry("middle", 20, NOW - DAY), entry("oldest", 10, NOW - 9 * DAY)]
    chosen, in_use = select(found, max_size=60, in_use_since=None)
    assert [e.path.name for e in chosen] == ["oldest", "old"]  # 100 -> 60
    assert in_use == []
    assert select(found, max_size=100, in_use_since=None) == ([], [])
    assert [e.path.name for e in select(found, 0, None)[0]] == ["oldest", "old", "middle",
                                                                "new"]


def test_an_entry_used_since_a_live_session_began_is_never_chosen() -> None:
    found = [entry("a", 50, NOW - 5 * DAY), entry("b", 50, NOW - 100), entry("c", 50, NOW)]
    chosen, in_use = select(found, max_size=0, in_use_since=NOW - 200)
    assert [e.path.name for e in chosen] == ["a"]
    assert [e.path.name for e in in_use] == ["b", "c"]


def test_ties_break_by_path_so_the_choice_is_reproducible() -> None:
    found = [entry("b", 10, NOW), entry("a", 10, NOW)]
    assert [e.path.name for e in select(found, 10, None)[0]] == ["a"]


# --------------------------------------------------------------------------- real files


def _file(path: Path, size: int, used: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (used, used))
    return path


def _folder(path: Path, sizes: list[int], used: float) -> Path:
    for i, size in enumerate(sizes):
        _file(path / f"f{i}.bin", size, used)
    os.utime(path, (used, used))
    return path


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process that is alive while the test runs."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lease(cache: Path, pid: int, started: float) -> Path:
    path = cache / LEASES / f"{HOST}-{pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": HOST, "started": started}))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """Entries of known sizes and last uses, oldest first:
    models/old (3000 B, 10 days), artifacts/m/a (2000 B, 5 days), results/k/r.json
    (1000 B, 3 days), faults/f.gguf + f.json (500 + 100 B, 2 days), models/recent (4000 B,
    an hour ago); and a user's sdist and a lock file, which are not entries."""
    now = time.time()
    root = tmp_path / "cache"
    _folder(root / "models" / "old", [1000, 2000], now - 10 * DAY)
    _folder(root / "artifacts" / "m" / "a", [2000], now - 5 * DAY)
    _file(root / "results" / "k" / "r.json", 1000, now - 3 * DAY)
    _file(root / "faults" / "f.json", 100, now - 2 * DAY)
    _file(root / "faults" / "f.gguf", 500, now - 2 * DAY)
    _folder(root / "models" / "recent", [4000], now - 3600)
    _file(root / "sdist" / "llama_cpp_python-1.0.tar.gz", 9000, now - 30 * DAY)
    _file(root / "models" / "old.lock", 0, now - 30 * DAY)
    return root


def test_the_walker_lists_each_entry_once_with_its_size(cache: Path) -> None:
    found = {str(e.path.relative_to(cache)): e.size for e in entries(cache)}
    assert found == {"models/old": 3000, "models/recent": 4000, "artifacts/m/a": 2000,
                     "results/k/r.json": 1000, "faults/f.gguf": 600}


def test_a_use_moves_an_entry_to_the_back_of_the_queue(cache: Path) -> None:
    touch(cache / "models" / "old")
    chosen = trim(cache, 8600, dry_run=True).removed  # 10600 bytes in all
    assert [str(e.path.relative_to(cache)) for e in chosen] == ["artifacts/m/a"]


def test_a_dead_sessions_lease_protects_nothing_and_is_removed(cache: Path) -> None:
    lease = _lease(cache, dead_pid(), time.time() - 30 * DAY)
    assert live_leases(cache) == []
    assert not lease.exists()


def test_this_processs_lease_is_live_until_released(tmp_path: Path) -> None:
    lease = Lease.take(tmp_path)
    again = Lease.take(tmp_path)
    assert again is lease
    assert [info.pid for info in live_leases(tmp_path)] == [os.getpid()]
    lease.release()
    assert live_leases(tmp_path) != []  # taken twice: still held once
    lease.release()
    assert live_leases(tmp_path) == []


def _clean(pytester: pytest.Pytester, cache: Path, *args: str) -> pytest.RunResult:
    return pytester.run(sys.executable, "-m", "pytest_groundtruth.cli.main", "clean",
                        "--cache-dir", str(cache), *args)


def _left(cache: Path) -> list[str]:
    """The files in the cache but leases and lock files (which are not entries)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.is_file() and p.parent.name != LEASES and p.suffix != ".lock")


@pytest.mark.slow
def test_clean_max_size_removes_the_least_recently_used_and_spares_a_live_lease(
        pytester: pytest.Pytester, cache: Path, live_pid: int) -> None:
    now = time.time()
    # A running session began 2 h ago and has used the artifact since (it is in use);
    # a session that died without releasing its lease protects nothing.
    _lease(cache, live_pid, now - 7200)
    os.utime(cache / "artifacts" / "m" / "a", (now - 600, now - 600))
    dead = dead_pid()
    _lease(cache, dead, now - 3 * DAY)
    before = _left(cache)

    dry = _clean(pytester, cache, "--max-size", "5000", "--dry-run")
    assert dry.ret == 0, dry.stderr.str()
    assert _left(cache) == before  # the dry run removes nothing
    dry.stdout.fnmatch_lines([f"would remove     2.9K  last used *  {cache}/models/old",
                              f"would remove    1000B  last used *  {cache}/results/k/r.json",
                              f"would remove     600B  last used *  {cache}/faults/f.gguf"])
    dry.stderr.fnmatch_lines([f"in use *3.9K  kept (a running session uses it)  "
                              f"{cache}/models/recent",
                              f"in use *2.0K  kept (a running session uses it)  "
                              f"{cache}/artifacts/m/a",
                              f"{cache} would hold 5.9K (was 10.4K; --max-size 4.9K): 3 least "
                              "recently used entries to remove (--dry-run: nothing removed)"])

    done = _clean(pytester, cache, "--max-size", "5000")
    assert done.ret == 0, done.stderr.str()
    assert _left(cache) == ["artifacts/m/a/f0.bin", "models/recent/f0.bin",
                            "sdist/llama_cpp_python-1.0.tar.gz"]
    assert not any((cache / LEASES).glob(f"*-{dead}.json"))


@pytest.mark.slow
def test_cache_max_size_trims_when_a_pytest_session_ends(pytester: pytest.Pytester,
                                                         cache: Path) -> None:
    pytester.makefile(".toml", pyproject=(
        "[tool.pytest.ini_options]\naddopts = '-p no:cacheprovider'\n"
        f"[tool.groundtruth]\ncache_dir = {str(cache)!r}\ncache_max_size = '5K'\n"
        'models = ["tiny-llama"]\nruntimes = ["transformers"]\nsuites = ["token"]\n'
        'quantizations = ["float32"]\n'))
    pytester.makefile(".toml", groundtruth="")
    shutil.copytree(ROOT / "prompts", pytester.path / "prompts")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    # 10600 bytes; the oldest three go (3000 + 2000 + 1000): 4600 <= 5120.
    result.stdout.fnmatch_lines([f"groundtruth cache: 3 least recently used entries removed "
                                 f"from {cache}, 10.4K -> 4.5K (cache_max_size 5.0K)"])
    assert _left(cache) == ["faults/f.gguf", "faults/f.json", "models/recent/f0.bin",
                            "sdist/llama_cpp_python-1.0.tar.gz"]


def test_a_bad_cache_max_size_names_the_key(tmp_path: Path) -> None:
    from pytest_groundtruth.config.settings import ConfigError, load_settings

    (tmp_path / "pyproject.toml").write_text("[tool.groundtruth]\ncache_max_size = '5 gigs'\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.groundtruth\]: key "
                                          r"'cache_max_size': '5 gigs' is not a size"):
        load_settings(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.groundtruth]\ncache_max_size = '5G'\n")
    assert load_settings(tmp_path).cache_max_size == 5 << 30
