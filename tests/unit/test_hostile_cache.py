"""The artifact cache against hostile conditions: a killed build's nested partial file, a
file corrupted in place with its mtime restored, a full disk, a read-only folder.

Everything is real: killed processes (SIGKILL), bytes overwritten on disk, a 2 MiB tmpfs
that fills up, a read-only bind mount. Mounting needs root or CAP_SYS_ADMIN; where it is
refused the test skips and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_groundtruth.core import atomic
from pytest_groundtruth.core.failures import CacheUnusable, EngineFailure, FailureKind
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.report.outcomes import of_exception
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, Recipe, prepare
from pytest_groundtruth.store.results import ResultStore

RECIPE = '''
import sys
from pathlib import Path
from pytest_groundtruth.store.artifacts import ArtifactCache, Recipe

def build(out: Path) -> str:
    out.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return "writes 1 MiB"

recipe = Recipe("m", "bytes", {"v": 1}, ".bin", build, lambda p: None)
'''


def recipe() -> Recipe:
    def build(out: Path) -> str:
        out.write_bytes(bytes(range(256)) * 4096)
        return "writes 1 MiB"

    return Recipe("m", "bytes", {"v": 1}, ".bin", build, lambda p: None)


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


# --------------------------------------------------------------------------- 8: partial files


def test_a_killed_nested_write_leaves_no_double_dot_partial(tmp_path: Path) -> None:
    """A writer inside the cache's temporary (the GGUF writer inside the artifact build)
    used to make ``..artifact.gguf.X.partial.Y.partial``, which no sweep matched."""
    target = tmp_path / "artifact.gguf"
    done = python(f'''
        import os, signal
        from pathlib import Path
        from pytest_groundtruth.core.atomic import atomic_path
        with atomic_path(Path({str(target)!r})) as tmp:
            with atomic_path(tmp) as inner:
                inner.write_bytes(b"x" * 100000)
                os.kill(os.getpid(), signal.SIGKILL)
    ''')
    assert done.returncode == -9, done.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left
    assert not any(name.startswith("..") for name in left), left
    assert all(name.startswith(".artifact.gguf.") and name.endswith(".partial")
               for name in left), left
    assert [p.name for p in atomic.sweep(target)] == left


def test_an_old_nested_partial_is_swept_on_a_warm_rerun(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    built = cache.get(recipe())
    folder = built.path.parent
    # A build killed by an older version: the process that wrote it is gone.
    done = python(f'''
        import os, signal
        from pathlib import Path
        from pytest_groundtruth.core import atomic
        tag = atomic._owner_tag()
        name = f"..{built.path.name}.abc{{tag}}.def{{tag}}"
        Path({str(folder)!r}, name).write_bytes(b"y" * 100000)
        os.kill(os.getpid(), signal.SIGKILL)
    ''')
    assert done.returncode == -9, done.stderr
    leaked = [p for p in folder.iterdir() if p.name.startswith("..")]
    assert len(leaked) == 1
    assert ArtifactCache(tmp_path).get(recipe()).path == built.path  # warm: no build
    assert not leaked[0].exists()


# --------------------------------------------------------------------------- 9: corruption


@pytest.mark.slow  # three sessions: three subprocesses
def test_a_corrupted_artifact_with_its_mtime_restored_is_rebuilt(tmp_path: Path) -> None:
    script = RECIPE + f'''
cache = ArtifactCache(Path({str(tmp_path)!r}))
built = cache.get(recipe)
note = cache.verify(built.path)  # what the engines do before opening it
assert cache.verify(built.path) == ""  # once per process
print(json.dumps({{"built": cache.built, "note": note,
                  "sound": built.path.read_bytes() == bytes(range(256)) * 4096}}))
'''
    script = "import json\n" + script
    first = json.loads(python(script).stdout)
    assert first == {"built": 1, "note": "", "sound": True}
    artifact = next((tmp_path / "artifacts" / "m").glob("*/artifact.bin"))
    before = artifact.stat()
    with artifact.open("r+b") as fh:  # a bit flip in place, then the times put back
        fh.seek(500_000)
        fh.write(b"\xff\xfe")
    os.utime(artifact, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert artifact.stat().st_mtime_ns == before.st_mtime_ns
    assert artifact.stat().st_ino == before.st_ino
    second = json.loads(python(script).stdout)  # a new session
    assert second["built"] == 1, "the corrupted file was reused"
    assert second["sound"]
    assert "was modified after it was built" in second["note"]
    assert "the converter was not at fault" in second["note"]
    third = json.loads(python(script).stdout)
    assert third["built"] == 0
    log = (tmp_path / "builds.log").read_text().splitlines()
    assert "modified after it was built" in json.loads(log[-1])["rebuilt"]


# --------------------------------------------------------------------------- 6, 7: mounts


def mount(*args: str) -> str | None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else done.stderr.strip() or "mount failed"


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "small"
    folder.mkdir()
    refused = mount("-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder))
    if refused:
        pytest.skip(f"a real full disk needs `mount -t tmpfs` (root or CAP_SYS_ADMIN): "
                    f"{refused}")
    try:
        yield folder
    finally:
        umount(folder)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a writable folder, the same folder mounted read-only)."""
    source, view = tmp_path / "cache", tmp_path / "ro"
    source.mkdir()
    view.mkdir()
    refused = mount("--bind", str(source), str(view)) or mount(
        "-o", "remount,ro,bind", str(view))
    if refused:
        umount(view)
        pytest.skip(f"a read-only folder needs a read-only bind mount (root or "
                    f"CAP_SYS_ADMIN; root ignores permission bits): {refused}")
    try:
        yield source, view
    finally:
        umount(view)


@pytest.mark.slow
def test_a_full_disk_is_named_and_not_the_engines_fault(
        full_disk: Path, tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")  # 13 MB of float32 weights: never fits in 2 MiB
    with pytest.raises(CacheUnusable) as info:
        prepare(LlamaCppRuntime(), model, "float32", ArtifactCache(full_disk))
    text = str(info.value)
    assert "no space left on the disk holding" in text
    assert str(full_disk) in text
    assert "ENOSPC" in text
    assert not isinstance(info.value, EngineFailure)
    assert of_exception(info.value) is None  # no Crashed verdict: the engine is not at fault
    assert not [p for p in full_disk.rglob("*.partial")]


def test_a_full_disk_under_a_command_converter_is_named(
        full_disk: Path, tmp_path: Path) -> None:
    def build(out: Path) -> str:  # a converter that writes until the disk is full
        done = subprocess.run([sys.executable, "-c", (
            "import sys\nf = open(sys.argv[1], 'wb')\nfor _ in range(8): "
            "f.write(b'z' * (1 << 20))\nf.close()"), str(out)], capture_output=True,
            text=True, timeout=60)
        if done.returncode:
            raise EngineFailure(FailureKind.CRASHED, f"converter exited {done.returncode}",
                                stderr=done.stderr)
        return "converter"

    big = Recipe("m", "big", {"v": 2}, ".bin", build, lambda p: None)
    with pytest.raises(CacheUnusable, match="no space left on the disk holding"):
        ArtifactCache(full_disk).get(big)


def test_a_warm_read_only_cache_is_used_as_it_is(read_only: tuple[Path, Path]) -> None:
    source, view = read_only
    built = ArtifactCache(source).get(recipe())
    ResultStore(source).put("generation", built.key, {"p": 1}, {"tokens": [1, 2]})
    with pytest.raises(OSError, match="Read-only file system"):
        (view / "probe").write_text("x")  # it is read-only indeed
    again = ArtifactCache(view).get(recipe())
    assert again.sha256 == built.sha256
    store = ResultStore(view)
    assert store.fetch("generation", built.key, {"p": 1}, lambda: {"tokens": [9]},
                       lambda d: d["tokens"]) == [1, 2]
    # a result missing from it: made, used, not stored
    assert store.fetch("generation", built.key, {"p": 2}, lambda: {"tokens": [3]},
                       lambda d: d["tokens"]) == [3]
    other = Recipe("m", "other", {"v": 3}, ".bin", recipe().build, lambda p: None)
    with pytest.raises(CacheUnusable) as info:
        ArtifactCache(view).get(other)
    assert f"the cache folder {view}" in str(info.value)
    assert "is not writable" in str(info.value)
    assert "--gt-cache-dir" in str(info.value)


@pytest.mark.slow
@pytest.mark.requires_llamacpp
def test_pytest_runs_from_a_warm_read_only_cache(read_only: tuple[Path, Path],
                                                 make_project: Callable[..., pytest.Pytester]
                                                 ) -> None:
    source, view = read_only
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["llamacpp"]\nquantizations = ["float32"]\n'
        'suites = ["gateway", "token"]\nprompts = ["code"]\n', models=("tiny-llama",))
    warm = pytester.runpytest(f"--gt-cache-dir={source}")
    warm.assert_outcomes(passed=2)
    again = pytester.runpytest(f"--gt-cache-dir={view}", "--gt-results=r.json")
    again.assert_outcomes(passed=2)
    cold = pytester.runpytest(f"--gt-cache-dir={view}", "--gt-quant=int8")
    text = cold.stdout.str()
    assert "Traceback" not in text
    assert f"the cache folder {view}" in text
    assert "is not writable" in text


@pytest.mark.slow
def test_a_full_disk_in_a_run_is_an_error_not_a_crash(
        full_disk: Path, make_project: Callable[..., pytest.Pytester]) -> None:
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["llamacpp"]\nquantizations = ["float32"]\n'
        'suites = ["gateway", "token"]\nprompts = ["code"]\n', models=("tiny-llama",))
    result = pytester.runpytest(f"--gt-cache-dir={full_disk}", "--gt-results=r.json")
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    assert "Traceback" not in text
    assert f"no space left on the disk holding {full_disk}" in text
    records = json.loads((pytester.path / "r.json").read_text())["results"]
    assert len(records) == 2
    assert not any(r["verdict"] for r in records)  # not Crashed: not the engine's failure
    result.stdout.fnmatch_lines(["tiny-llama*llamacpp*float32*E*E*"])
