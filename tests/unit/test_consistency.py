"""consistency: generated tokens against the runtime's own teacher-forced scoring."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_groundtruth.lab.engine_faults import ENGINE_FAULTS, FaultyLlamaCppRunner
from pytest_groundtruth.lab.rescore_calibration import RescoreMeasured, derive_consistency
from pytest_groundtruth.measures.consistency import check
from pytest_groundtruth.measures.rescore import rate
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner, LlamaCppRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

Project = Callable[..., pytest.Pytester]


def own_rows(*distributions: list[float]) -> np.ndarray:
    return np.log(np.asarray(distributions, dtype=np.float64))


def test_a_generated_token_that_is_its_own_argmax_has_no_gap() -> None:
    rows = own_rows([0.7, 0.2, 0.1], [0.1, 0.6, 0.3])
    verdict = check(rate([0, 1], rows), max_gap=0.1)
    assert verdict.passed
    assert verdict.max_gap == 0
    assert verdict.flips == 0


def test_a_near_tie_flip_passes_and_a_second_choice_fails_naming_it() -> None:
    near = own_rows([0.50, 0.49, 0.01], [0.1, 0.6, 0.3])
    assert check(rate([1, 1], near), max_gap=0.1).passed  # gap ln(50/49) = 0.02
    far = own_rows([0.7, 0.2, 0.1], [0.1, 0.6, 0.3])
    verdict = check(rate([0, 2], far), max_gap=0.1)
    assert not verdict.passed
    assert verdict.worst is not None
    assert (verdict.worst.position, verdict.worst.best, verdict.worst.rank) == (1, 1, 2)
    assert math.isclose(verdict.max_gap, math.log(2))
    assert [r.position for r in verdict.over] == [1]
    assert verdict.flips == 1


def test_calibration_rule() -> None:
    rows = [RescoreMeasured("llamacpp", "int4", 7.0, "code", 0.2, 150, 0.061),
            RescoreMeasured("llamacpp", "q4_1", 0.3, "code", 0.0, 150, 0.4),
            RescoreMeasured("torchao", "int4", 9.0, "code", 0.3, 150, 0.002),
            RescoreMeasured("torchao", "int8", 0.2, "code", 0.0, 150, 0.03),
            RescoreMeasured("llamacpp", "float32", 0.0, "code", 0.0, 150, 0.0),
            RescoreMeasured("apr", "q5_0", 0.2, "code", 0.0, 150, None)]
    # lossy: twice the largest flip over every lossy type of the runtimes measured there
    assert derive_consistency(rows, "int4") == {"max_gap": 0.8}
    assert derive_consistency([r for r in rows if r.runtime == "torchao"], "int4") == {
        "max_gap": 0.1}  # 2 x 0.03 is below the near-tie floor
    assert derive_consistency(rows, "float32") == {"max_gap": 0.1}  # lossless: its own
    with pytest.raises(ValueError, match="no correct conversion was self-scored at q5_0"):
        derive_consistency(rows, "q5_0")


@pytest.fixture(scope="module")
def artifact(tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> Artifact:
    return prepare(LlamaCppRuntime(), tiny("llama"), "float32", ArtifactCache(gt_cache))


def self_gaps(runner: LlamaCppRunner, prompts: tuple[str, ...]) -> list[float]:
    gaps = []
    for prompt in prompts:
        gen = runner.generate(prompt, 16)
        rows = runner.score([*gen.prompt_tokens, *gen.tokens], len(gen.prompt_tokens))
        gaps.append(check(rate(gen.tokens, np.asarray(rows)), math.inf).max_gap)
    return gaps


PROMPTS = ("def fibonacci(n):", "The capital of France is", "Once upon a time")


@pytest.mark.requires_llamacpp
def test_real_llama_cpp_agrees_with_itself(artifact: Artifact) -> None:
    with LlamaCppRunner(artifact) as runner:
        assert max(self_gaps(runner, PROMPTS)) <= 0.1


@pytest.mark.requires_llamacpp
@pytest.mark.parametrize("fault", [f for f in ENGINE_FAULTS if f != "rope_base_wrong"])
def test_every_generation_loop_fault_disagrees_with_its_own_scoring(artifact: Artifact,
                                                                     fault: str) -> None:
    # rope_base_wrong is in both paths alike: the reference suites judge it, not this one.
    with FaultyLlamaCppRunner(artifact, fault) as runner:
        assert max(self_gaps(runner, PROMPTS)) > 0.1


@pytest.mark.requires_llamacpp
def test_the_suite_as_users_run_it(make_project: Project) -> None:
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["llamacpp", "transformers"]\n'
        'quantizations = ["float32"]\nsuites = ["consistency"]\n'
        'prompts = ["code", "greeting"]\n', models=("tiny-llama",))
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "*consistency[[]tiny-llama-llamacpp-float32-code[]] PASSED*",
        "*consistency[[]tiny-llama-transformers-float32-greeting[]] PASSED*",
    ])
