"""Prompt-token parity: the pure check, and the generation suites failing on it first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.lab.file_faults import inject
from pytest_groundtruth.measures.prompt_parity import PromptDifference, prompt_difference
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

Project = Callable[..., pytest.Pytester]


def test_identical_or_unreported_prompts_pass() -> None:
    assert prompt_difference([5, 6, 7], [5, 6, 7]) is None
    assert prompt_difference([5, 6, 7], []) is None  # apr reports none: nothing to compare


def test_bos_added_or_missing_is_named() -> None:
    added = prompt_difference([5, 6], [1, 5, 6])
    assert added == PromptDifference(0, 5, 1, 2, 3, "a token added at the start, as a BOS "
                                                    "would be")
    missing = prompt_difference([1, 5, 6], [5, 6])
    assert missing is not None
    assert missing.kind == "the first token missing, as a BOS would be"
    assert missing.describe(lambda t: f"<{t}>") == (
        "prompt tokens differ from the oracle's at position 0 (the first token missing, as a "
        "BOS would be): runtime 5 '<5>', oracle 1 '<1>' (2 vs 3 prompt tokens)")


def test_other_differences() -> None:
    split = prompt_difference([4239, 506, 2545], [4239, 23, 99, 2545])
    assert split is not None
    assert (split.position, split.kind) == (1, "the text is split into other tokens")
    longer = prompt_difference([5, 6], [5, 6, 6])
    assert longer is not None
    assert (longer.position, longer.oracle_id, longer.runtime_id) == (2, None, 6)
    assert longer.kind == "1 token(s) added at the end"
    shorter = prompt_difference([5, 6, 7], [5, 6])
    assert shorter is not None
    assert shorter.kind == "1 token(s) missing at the end"


@pytest.mark.requires_llamacpp
@pytest.mark.parametrize("suite", ["token", "topk", "rescore", "canary", "drift"])
def test_generation_suites_fail_on_an_added_bos_naming_it(
    suite: str, make_project: Project, tiny: Callable[[str], ResolvedModel], gt_cache: Path
) -> None:
    quants = '["int8", "int4"]' if suite == "drift" else '["int8"]'
    pytester = make_project(
        f'models = ["tiny-llama"]\nruntimes = ["llamacpp"]\nquantizations = {quants}\n'
        f'suites = ["{suite}"]\nprompts = ["code"]\n', models=("tiny-llama",))
    options = []
    for quant in ("int8", "int4") if suite == "drift" else ("int8",):
        good = prepare(LlamaCppRuntime(), tiny("llama"), quant, ArtifactCache(gt_cache)).path
        inject("bos_added", good, pytester.path / f"bos-{quant}.gguf")
        options += ["--gt-artifact", f"tiny-llama:llamacpp:{quant}=bos-{quant}.gguf"]
    result = pytester.runpytest(*options)
    assert result.parseoutcomes()["failed"] >= 1
    result.stdout.fnmatch_lines([
        f"*{suite}[[]tiny-llama-llamacpp-*]: prompt tokens differ from the oracle's at "
        "position 0 (a token added at the start, as a BOS would be): runtime 1 "
        "'<|im_start|>', oracle *",
    ])
