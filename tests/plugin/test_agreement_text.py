"""agreement's ``text`` variant: teacher-forced on the evaluation text against the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.lab.file_faults import inject
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare
from pytest_groundtruth.suites.spec import get_suite

Project = Callable[..., pytest.Pytester]
TOOL = ('models = ["tiny-llama"]\nruntimes = ["llamacpp"]\nquantizations = ["float32"]\n'
        'suites = ["agreement"]\nprompts = ["code", "greeting"]\n')


def test_the_text_bounds_are_declared_per_runtime_scheme() -> None:
    suite = get_suite("agreement")
    # llama.cpp's int4 (Q4_0) has bounds of its own, tighter than the name's (which also
    # covers torchao's int4 scheme) and calibrated on the evaluation text too.
    assert suite.default("text_max_kl", "int4", "llamacpp") is not None
    ours, loosest = suite.default("max_kl", "int4", "llamacpp"), suite.default("max_kl", "int4")
    assert ours is not None
    assert loosest is not None
    assert ours <= loosest
    assert suite.default("max_kl", "int4", "a-runtime-calibrated-nowhere") == \
        suite.default("max_kl", "int4")


@pytest.mark.requires_llamacpp
def test_a_correct_engine_passes_both_cases(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*agreement[[]tiny-llama-llamacpp-text-float32[]] PASSED*"])


@pytest.mark.requires_llamacpp
def test_a_broken_file_fails_on_the_text_naming_it(
    make_project: Project, tiny: Callable[[str], ResolvedModel], gt_cache: Path
) -> None:
    good = prepare(LlamaCppRuntime(), tiny("llama"), "float32", ArtifactCache(gt_cache)).path
    pytester = make_project(TOOL, models=("tiny-llama",))
    inject("norms_swapped", good, pytester.path / "broken.gguf")
    result = pytester.runpytest("--gt-artifact", "tiny-llama:llamacpp:float32=broken.gguf")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "agreement[[]tiny-llama-llamacpp-text-float32[]]: perplexity.txt: top-1 agreement * "
        "over * teacher-forced positions",
    ])
