"""The oracle drift check runs once per change of what decides it, and keeps its verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_groundtruth.config.settings import load_settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.oracle.diff import CROSS_MACHINE_TOLERANCE
from pytest_groundtruth.oracle.format import seal_of
from pytest_groundtruth.oracle.generation import oracle_check
from pytest_groundtruth.oracle.generation.oracle_check import check_inputs, check_model

ROOT = Path(__file__).parents[2]
SLUG = "tiny-llama"


@pytest.fixture
def project(tmp_path: Path, gt_cache: Path) -> Path:
    """A project with the committed tiny-llama oracles and an empty result store."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(gt_cache / "models", target_is_directory=True)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.groundtruth]\nmodels = ["{SLUG}"]\ncache_dir = {str(cache)!r}\n')
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    shutil.copytree(ROOT / "oracle" / SLUG, tmp_path / "oracle" / SLUG)
    return tmp_path


def context(root: Path, refresh_token: str | None = None) -> Context:
    return Context.open(load_settings(root), refresh_token=refresh_token)


def inputs(root: Path) -> dict[str, object]:
    ctx = context(root)
    return check_inputs(ctx, ctx.engines.model(SLUG), CROSS_MACHINE_TOLERANCE)


def nudge_logprob(root: Path, delta: float) -> None:
    path = root / "oracle" / SLUG / "code.json"
    data = json.loads(path.read_text())
    data["topk"][0]["logprobs"][0] = round(data["topk"][0]["logprobs"][0] + delta, 6)
    data["seal"] = seal_of(data)  # a regeneration elsewhere, not a hand edit
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_the_key_follows_everything_the_verdict_depends_on(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = inputs(project)
    assert base == inputs(project)  # stable: an unchanged re-run finds the stored verdict
    nudge_logprob(project, 1e-6)
    assert inputs(project)["oracle_files"] != base["oracle_files"]
    (project / "prompts" / "code.txt").write_text("def fib(n):\n")
    assert inputs(project)["prompts"] != base["prompts"]
    monkeypatch.setattr(oracle_check, "package_version", lambda name: "0.0-other")
    assert inputs(project)["libraries"] != base["libraries"]
    monkeypatch.setattr(oracle_check, "cpu_kernel_family", lambda: {"flags": "avx2 fma"})
    assert inputs(project)["cpu"] != base["cpu"]
    for key in ("model", "code", "eval_text", "max_new_tokens", "top_k", "tolerance"):
        assert key in base


@pytest.mark.slow
def test_the_verdict_is_stored_failures_included(project: Path) -> None:
    first = check_model(context(project), SLUG, CROSS_MACHINE_TOLERANCE)
    assert (first.passed, first.made_now) == (True, True), first.explain()
    again = check_model(context(project), SLUG, CROSS_MACHINE_TOLERANCE)
    assert (again.passed, again.made_now) == (True, False)

    nudge_logprob(project, 0.5)  # a changed reference, far beyond float32 noise
    broken = check_model(context(project), SLUG, CROSS_MACHINE_TOLERANCE)
    assert (broken.passed, broken.made_now) == (False, True)
    failing = [(Path(c["path"]).name, c["status"]) for c in broken.changes
               if c["status"] not in ("unchanged", "noise")]
    assert failing == [("code.json", "changed")]
    stored = check_model(context(project), SLUG, CROSS_MACHINE_TOLERANCE)
    assert (stored.passed, stored.made_now) == (False, False)  # still fails, not rerun
    assert "code.json" in stored.explain()
    assert "stored verdict" in stored.explain()

    refreshed = check_model(context(project, refresh_token="run-2"), SLUG,
                            CROSS_MACHINE_TOLERANCE)  # --gt-no-cache
    assert (refreshed.passed, refreshed.made_now) == (False, True)
