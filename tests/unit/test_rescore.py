"""Rescoring: the pure measures, the calibration rule, and the suite run as users run it."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_groundtruth.lab.file_faults import inject
from pytest_groundtruth.lab.rescore_calibration import RescoreMeasured, derive
from pytest_groundtruth.measures.rescore import (
    Rating,
    judge,
    judged_span,
    rate,
    stop_problem,
)
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

Project = Callable[..., pytest.Pytester]


def rows(*distributions: list[float]) -> np.ndarray:
    return np.log(np.asarray(distributions, dtype=np.float64))


def test_rate_gives_rank_and_gap_of_the_runtime_choice() -> None:
    lp = rows([0.5, 0.3, 0.2], [0.1, 0.1, 0.8])
    first, second = rate([1, 0], lp)
    assert (first.rank, first.best) == (2, 0)
    assert first.gap == pytest.approx(math.log(0.5 / 0.3))
    assert (second.rank, second.best) == (2, 2)  # a tie with id 1 ranks by id, as argmax
    assert rate([2], rows([0.25, 0.25, 0.5]))[0] == Rating(0, 2, math.log(0.5), 2,
                                                            math.log(0.5), 1)
    with pytest.raises(ValueError, match="2 reference rows for 1 runtime tokens"):
        rate([0], lp)
    with pytest.raises(ValueError, match="token id 7 outside"):
        rate([7], rows([0.5, 0.5]))


def test_rating_roundtrips_through_json() -> None:
    rating = rate([1], rows([0.6, 0.4]))[0]
    assert Rating.from_json(0, rating.to_json()) == rating


def test_a_near_tie_flip_costs_once_later_positions_judged_on_their_own_prefix() -> None:
    # The runtime takes the runner-up at a near tie, then agrees with the reference on
    # its own prefix: one small gap, not a cascade of mismatches.
    flip = rate([1, 2, 0], rows([0.51, 0.49, 0.0 + 1e-9], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]))
    verdict = judge(flip, [math.log(0.51)] * 3, max_gap=0.1, max_excess_nll=math.inf)
    assert verdict.passed
    assert [r.rank for r in flip] == [2, 1, 1]
    assert verdict.max_gap == pytest.approx(math.log(51 / 49))
    wrong = rate([1, 2, 0], rows([0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]))
    bad = judge(wrong, [math.log(0.9)] * 3, max_gap=0.1, max_excess_nll=math.inf)
    assert not bad.passed
    assert [r.position for r in bad.over] == [0]
    assert bad.worst is not None
    assert bad.worst.position == 0


def test_excess_nll_compares_with_the_oracle_continuation() -> None:
    ratings = rate([0, 0], rows([0.5, 0.5], [0.5, 0.5]))
    verdict = judge(ratings, [math.log(0.9), math.log(0.9)], max_gap=1.0, max_excess_nll=0.6)
    assert verdict.excess_nll == pytest.approx(math.log(0.9 / 0.5))
    assert verdict.passed
    assert not judge(ratings, [0.0, 0.0], max_gap=1.0, max_excess_nll=0.6).passed


def test_stop_rule() -> None:
    eos = (2,)
    assert judged_span([5, 2, 7, 8], eos) == 2
    assert judged_span([5, 6], eos) == 2
    assert stop_problem([5, 6], "length", eos) is None
    assert stop_problem([5, 2], "eos", eos) is None
    assert stop_problem([5, 2, 7], "length", eos) == (
        "generated end-of-sequence token 2 at position 1 and did not stop (1 more token(s))")
    assert "not one of the model's end-of-sequence ids [2]" in str(
        stop_problem([5, 6], "eos", eos))
    failed = judge((), [], 0.1, 1.0, stop="generated no tokens")
    assert not failed.passed
    assert failed.worst is None


def test_calibration_rule() -> None:
    measured = [RescoreMeasured("a", "int8", 0.23, "code", -0.05, 150),
                RescoreMeasured("b", "int8", 0.13, "greeting", 0.02, 150),
                RescoreMeasured("a", "float32", 0.0, "code", 0.0, 150)]
    assert derive(measured, "int8", se=0.1) == {"max_gap": 0.46, "max_excess_nll": 0.32}
    # A correct conversion that never left the reference still gets the near-tie floor.
    assert derive(measured, "float32", se=0.1) == {"max_gap": 0.1, "max_excess_nll": 0.3}
    with pytest.raises(ValueError, match="no correct conversion was measured at int4"):
        derive(measured, "int4", se=0.1)


TOOL = ('models = ["tiny-llama"]\nruntimes = ["llamacpp", "transformers"]\n'
        'quantizations = ["float32"]\nsuites = ["rescore"]\n'
        'prompts = ["code", "greeting"]\n')


@pytest.mark.requires_llamacpp
def test_the_suite_passes_a_correct_engine_and_its_pooled_case(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([
        "*rescore[[]tiny-llama-llamacpp-nll-float32[]] PASSED*",
        "*rescore[[]tiny-llama-llamacpp-float32-code[]] PASSED*",
    ])


@pytest.mark.requires_llamacpp
def test_the_suite_fails_a_broken_file_naming_the_position(
    make_project: Project, tiny: Callable[[str], ResolvedModel], gt_cache: Path
) -> None:
    model = tiny("llama")
    pytester = make_project(TOOL.replace('"llamacpp", "transformers"', '"llamacpp"'),
                            models=("tiny-llama",))
    good = prepare(LlamaCppRuntime(), model, "float32", ArtifactCache(gt_cache)).path
    inject("norms_swapped", good, pytester.path / "broken.gguf")
    result = pytester.runpytest("--gt-artifact", "tiny-llama:llamacpp:float32=broken.gguf")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "rescore[[]tiny-llama-llamacpp-nll-float32[]]: reference NLL of the runtime's "
        "continuations * vs the oracle's own * nats/token: excess * > 0.24 over * tokens",
        "rescore[[]tiny-llama-llamacpp-float32-code[]]: largest gap to the reference's "
        "choice * nats at position * (runtime token *, reference rank *; the reference's "
        "choice *) > 0.1; * position(s) over the bound",
    ])


def test_the_suite_needs_only_tokens_apr_stand_in(make_project: Project, tmp_path: Path) -> None:
    from standins.apr.cli import write_launcher

    launcher = write_launcher(tmp_path / "bin")
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["apr"]\nquantizations = ["float16"]\n'
        f'suites = ["rescore"]\nprompts = ["code", "greeting"]\napr_bin = "{launcher}"\n',
        models=("tiny-llama",))
    result = pytester.runpytest("--gt-results", "r.json")
    result.assert_outcomes(passed=3)  # apr returns tokens only: no scores, no prompt ids


def test_only_chat_prompts_on_a_runtime_without_chat_skip_saying_what_to_select(
        make_project: Project, tmp_path: Path) -> None:
    from standins.apr.cli import write_launcher

    launcher = write_launcher(tmp_path / "bin")
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["apr"]\nquantizations = ["float16"]\n'
        f'suites = ["rescore", "gateway"]\nprompts = ["capital"]\napr_bin = "{launcher}"\n',
        models=("tiny-llama",), chat=True)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=3)  # the chat case, the pooled case, the gateway
    result.stdout.fnmatch_lines(["*every selected prompt is a chat prompt (capital): select a "
                                 "plain prompt*"])
