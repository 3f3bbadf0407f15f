"""Engine faults: each wrapper breaks real llama.cpp the way it says, and only that way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_groundtruth.lab.engine_faults import (
    ENGINE_FAULTS,
    SECOND_BEST_EVERY,
    SECOND_BEST_FIRST,
    FaultyLlamaCppRunner,
    FaultyLlamaCppRuntime,
)
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner, LlamaCppRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

pytestmark = pytest.mark.requires_llamacpp
PROMPTS = ("def fibonacci(n):", "The capital of France is")


@pytest.fixture(scope="module")
def artifact(tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> Artifact:
    return prepare(LlamaCppRuntime(), tiny("llama"), "float32", ArtifactCache(gt_cache))


@pytest.fixture(scope="module")
def correct(artifact: Artifact) -> Iterator[LlamaCppRunner]:
    with LlamaCppRunner(artifact, kv_cache="f32") as runner:
        yield runner


def faulty(artifact: Artifact, fault: str) -> FaultyLlamaCppRunner:
    return FaultyLlamaCppRunner(artifact, fault, kv_cache="f32")


def test_dropped_and_repeated_prompt_tokens(artifact: Artifact, correct: LlamaCppRunner
                                            ) -> None:
    ids = correct.tokenize(PROMPTS[0])
    with faulty(artifact, "prompt_token_dropped") as runner:
        dropped = runner.generate(PROMPTS[0], 8)
    # Reported as tokenized (a server echoes its tokenizer's ids); evaluated without the
    # last one: the continuation is the correct engine's continuation of prompt[:-1].
    assert dropped.prompt_tokens == tuple(ids)
    correct.llm.reset()
    correct.llm.eval(ids[:-1])
    assert dropped.tokens[0] == int(correct.llm.scores[len(ids) - 2].argmax())
    with faulty(artifact, "prompt_token_repeated") as runner:
        repeated = runner.generate(PROMPTS[0], 8)
    correct.llm.reset()
    correct.llm.eval([*ids, ids[-1]])
    assert repeated.tokens[0] == int(correct.llm.scores[len(ids)].argmax())
    assert repeated.prompt_tokens == tuple(ids)


def test_positions_shifted_keeps_the_first_token_and_moves_the_rest(
    artifact: Artifact, correct: LlamaCppRunner
) -> None:
    expected = correct.generate(PROMPTS[1], 16)
    with faulty(artifact, "positions_shifted") as runner:
        shifted = runner.generate(PROMPTS[1], 16)
    assert shifted.tokens[0] == expected.tokens[0]  # chosen before any position moved
    assert shifted.tokens != expected.tokens


def test_kv_cache_reused_changes_only_the_later_prompts(artifact: Artifact,
                                                         correct: LlamaCppRunner) -> None:
    expected = [correct.generate(p, 8).tokens for p in PROMPTS]
    with faulty(artifact, "kv_cache_reused") as runner:
        got = [runner.generate(p, 8).tokens for p in PROMPTS]
    assert got[0] == expected[0]
    assert got[1] != expected[1]


def test_rope_base_is_overridden_at_load(artifact: Artifact, correct: LlamaCppRunner) -> None:
    with faulty(artifact, "rope_base_wrong") as runner:
        assert "rope_freq_base=500000.0" in runner.load_call  # the file says 10000
        assert runner.generate(PROMPTS[1], 16).tokens != correct.generate(PROMPTS[1], 16).tokens
        # the fault is in the engine: scoring is affected too
        ids = correct.tokenize(PROMPTS[1])
        assert not (runner.score(ids, 1) == correct.score(ids, 1)).all()


def test_second_best_sometimes_takes_the_runner_up_on_schedule(artifact: Artifact) -> None:
    with faulty(artifact, "second_best_sometimes") as runner:
        gen = runner.generate(PROMPTS[1], 24, top_k=3)
    assert gen.topk is not None
    for step, (token, top) in enumerate(zip(gen.tokens, gen.topk, strict=True)):
        late = step - SECOND_BEST_FIRST
        scheduled = late >= 0 and late % SECOND_BEST_EVERY == 0
        assert token == top.ids[1 if scheduled else 0], step


def test_the_runtime_keys_results_by_fault_and_rejects_unknown_ones() -> None:
    parts = {f: FaultyLlamaCppRuntime(f).key_parts("int8")["engine_fault"] for f in ENGINE_FAULTS}
    assert parts == {f: f for f in ENGINE_FAULTS}
    assert "engine_fault" not in LlamaCppRuntime().key_parts("int8")
    with pytest.raises(ValueError, match="unknown engine fault 'gremlins'"):
        FaultyLlamaCppRuntime("gremlins")
