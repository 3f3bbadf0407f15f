"""Reference conversions by llama.cpp's tools and the automatic per-model bounds (real
conversions of a tiny model; they need llama.cpp's converter from the llama-cpp-python sdist)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_groundtruth.config.settings import ExternalArtifact, Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.framework import auto, reference
from pytest_groundtruth.framework.bounds import committed
from pytest_groundtruth.ggufio import hfconvert
from pytest_groundtruth.ggufio import quantize as quantizer
from pytest_groundtruth.lab import model_bounds
from pytest_groundtruth.lab.file_faults import inject
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult
from pytest_groundtruth.suites.spec import get_suite

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.requires_llamacpp]
MODEL = "tiny-llama"


@pytest.fixture
def ctx(tmp_path: Path, gt_cache: Path) -> Iterator[Context]:
    reason = hfconvert.unavailable(gt_cache)
    if reason:
        pytest.skip(reason)
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts", ignore=shutil.ignore_patterns("chat"))
    shutil.copytree(ROOT / "oracle" / MODEL, tmp_path / "oracle" / MODEL)
    settings = Settings(root=tmp_path, models=(MODEL,), runtimes=("llamacpp",),
                        quantizations=("int4",), cache_dir=gt_cache, prompts=("code", "greeting"))
    context = Context.open(settings)
    yield context
    context.close()


def test_a_type_matched_reference_has_the_artifacts_types(ctx: Context, tmp_path: Path
                                                          ) -> None:
    ours = ctx.engines.artifact(MODEL, "llamacpp", "int4")  # our exporter: Q4_0 everywhere
    types = reference.tensor_types(ours.path)
    assert types is not None
    # an artifact whose token embeddings are Q8_0, another converter's choice
    changed = {**types, "token_embd.weight": "Q8_0"}
    refs = reference.references(ctx, MODEL, "llamacpp", "int4", changed)
    assert [r.label.endswith("(recipe-matched)") for r in refs] == [True, False]
    assert reference.tensor_types(refs[1].artifact.path) == changed
    assert refs[0].artifact.key != refs[1].artifact.key
    # the same types as the recipe: no second conversion
    recipe_types = reference.tensor_types(refs[0].artifact.path)
    assert recipe_types is not None
    assert len(reference.references(ctx, MODEL, "llamacpp", "int4", recipe_types)) == 1
    assert quantizer.main_quant(changed) == "q4_0"


def test_automatic_bounds_are_made_once_and_committed_by_the_command(ctx: Context) -> None:
    suite = get_suite("agreement")
    assert suite.calibration is not None
    # a random-weight model gets the package's random-weight calibration, not this
    assert auto.bounds(ctx, "agreement", suite.calibration, MODEL, "llamacpp", "int4") == \
        (None, "")
    # an artifact supplied by the user (here: our own file) is calibrated on its references
    supplied = ctx.engines.artifact(MODEL, "llamacpp", "int4").path
    settings = replace(ctx.settings, artifacts=(ExternalArtifact(MODEL, "llamacpp", "int4",
                                                                 supplied),))
    # A refresh token of its own: the calibration is computed now even where an earlier run
    # left it in the shared cache (results written under another token are not read).
    fresh = Context.open(settings, refresh_token=uuid.uuid4().hex)
    try:
        found, how = auto.bounds(fresh, "agreement", suite.calibration, MODEL, "llamacpp",
                                 "int4", force=True)
        assert found is not None
        assert set(found) == set(suite.calibration.params)
        assert "recipe-matched" in how
        assert "cached by content" in how
        made = fresh.results.store.made
    finally:
        fresh.close()
    again = Context.open(settings)  # another process: the cached result, no engine work
    try:
        assert auto.bounds(again, "agreement", suite.calibration, MODEL, "llamacpp", "int4",
                           force=True)[0] == found
        assert again.results.store.made == 0
        assert made > 0
        written = model_bounds.calibrate_model(again, MODEL)
        path = model_bounds.write(again, written)
    finally:
        again.close()
    mine = committed(settings, MODEL)
    assert mine is not None
    assert mine.path == path
    assert mine.suites["agreement"]["llamacpp:int4"] == found
    assert {"agreement", "ppl", "rescore", "consistency"} <= set(mine.suites)


def _paired(settings: Settings) -> SuiteResult:
    context = Context.open(settings)
    try:
        return get_suite("paired").judge(Case("paired", MODEL, "llamacpp", "int4"), context)
    finally:
        context.close()


def test_paired_passes_a_correct_file_and_fails_a_broken_one(ctx: Context, tmp_path: Path
                                                            ) -> None:
    ours = ctx.engines.artifact(MODEL, "llamacpp", "int4")
    correct = _paired(ctx.settings)
    assert correct.passed, correct.explain()
    assert "type-matched" in correct.notes[0] or "recipe-matched" in correct.notes[0]
    broken = tmp_path / "broken.gguf"
    inject("tensor_zeroed", ours.path, broken)
    found = _paired(replace(ctx.settings, artifacts=(
        ExternalArtifact(MODEL, "llamacpp", "int4", broken),)))
    assert not found.passed, found.explain()
    assert found.details["excess_kl_low"] > found.details["margin_nats"]
    assert "worse than a correct conversion of the same types by +" in found.summary
