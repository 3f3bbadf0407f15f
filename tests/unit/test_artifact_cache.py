"""The artifact cache: built once across processes, corrupt artifacts rebuilt."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

pytestmark = pytest.mark.requires_llamacpp


def builds(cache: Path) -> list[dict[str, str]]:
    log = cache / "builds.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fresh_cache(tmp_path: Path, gt_cache: Path) -> Path:
    """An empty artifact cache that shares the (expensive) converted source models."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(gt_cache / "models", target_is_directory=True)
    return cache


@pytest.mark.slow
def test_built_once_then_reused(fresh_cache: Path, tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")
    runtime = LlamaCppRuntime()
    first = prepare(runtime, model, "int8", ArtifactCache(fresh_cache))
    second = prepare(runtime, model, "int8", ArtifactCache(fresh_cache))
    assert first == second
    assert len(builds(fresh_cache)) == 1
    assert first.details["sha256"]
    assert "export_gguf" in first.recipe
    assert not list(fresh_cache.rglob("*.partial"))


@pytest.mark.slow
def test_corrupt_or_truncated_artifact_is_rebuilt(fresh_cache: Path,
                                                  tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")
    cache = ArtifactCache(fresh_cache)
    artifact = prepare(LlamaCppRuntime(), model, "int8", cache)
    good = artifact.path.read_bytes()
    artifact.path.write_bytes(good[: len(good) // 2])  # an interrupted copy, say
    rebuilt = prepare(LlamaCppRuntime(), model, "int8", cache)
    assert rebuilt.path.read_bytes() == good
    assert len(builds(fresh_cache)) == 2


@pytest.mark.slow
def test_refresh_token_rebuilds_once(fresh_cache: Path,
                                     tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")
    prepare(LlamaCppRuntime(), model, "int8", ArtifactCache(fresh_cache))
    for _ in range(2):
        prepare(LlamaCppRuntime(), model, "int8",
                ArtifactCache(fresh_cache, refresh_token="run-1"))
    assert len(builds(fresh_cache)) == 2


@pytest.mark.slow
def test_two_xdist_workers_convert_one_artifact_once(
    make_project: Callable[..., pytest.Pytester], fresh_cache: Path, tiny: Callable[[str],
                                                                                    ResolvedModel]
) -> None:
    tiny("llama")  # the source model exists; only the artifact is contended
    pytester = make_project("")
    pytester.path.joinpath("pyproject.toml").write_text(
        f"[tool.groundtruth]\ncache_dir = {str(fresh_cache)!r}\n")
    barrier = pytester.path / "barrier"
    barrier.mkdir()
    pytester.makepyfile(test_same=f"""
        import os, time
        from pathlib import Path
        import pytest

        @pytest.mark.parametrize("n", [0, 1])
        def test_ask(gt_context, n):
            Path({str(barrier)!r}, str(n)).touch()
            deadline = time.time() + 60
            while len(os.listdir({str(barrier)!r})) < 2 and time.time() < deadline:
                time.sleep(0.05)
            artifact = gt_context.engines.artifact("tiny-llama", "llamacpp", "int8")
            assert artifact.path.is_file()
        """)
    result = pytester.runpytest("-n", "2", "--dist", "load", "test_same.py")
    result.assert_outcomes(passed=2)
    entries = [b for b in builds(fresh_cache) if b["label"].startswith("llamacpp-")]
    assert len(entries) == 1, entries


@pytest.mark.slow
def test_a_warm_get_trusts_an_untouched_file_without_hashing(
        fresh_cache: Path, tiny: Callable[[str], ResolvedModel],
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny("llama")
    built = prepare(LlamaCppRuntime(), model, "int8", ArtifactCache(fresh_cache))

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr("pytest_groundtruth.store.artifacts.tree_sha256", no_hashing)
    assert prepare(LlamaCppRuntime(), model, "int8", ArtifactCache(fresh_cache)) == built


@pytest.mark.slow
def test_a_touched_file_is_hashed_and_kept_when_its_bytes_are_the_same(
        fresh_cache: Path, tiny: Callable[[str], ResolvedModel]) -> None:
    model = tiny("llama")
    cache = ArtifactCache(fresh_cache)
    artifact = prepare(LlamaCppRuntime(), model, "int8", cache)
    manifest = artifact.path.parent / "manifest.json"
    old = json.loads(manifest.read_text())
    del old["files"]  # a manifest written before sizes and mtimes were recorded
    manifest.write_text(json.dumps(old))
    artifact.path.write_bytes(artifact.path.read_bytes())  # same bytes, a new mtime
    assert prepare(LlamaCppRuntime(), model, "int8", cache) == artifact
    assert len(builds(fresh_cache)) == 1  # not rebuilt
    assert "files" in json.loads(manifest.read_text())  # trusted from now on
