"""A float32 reference larger than the memory budget: loaded with accelerate's disk
offload, it gives the same tokens and the same log-probabilities, bit for bit, as the
model loaded whole (the same float32 arithmetic on the same values)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_groundtruth.core.budget import rss_bytes, weights_bytes
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.hf import MemoryBudget, TransformersRunner, working_bytes

pytestmark = pytest.mark.slow

PROMPTS = ("The capital of France is", "def fibonacci(n):")


@pytest.fixture(scope="module")
def deep(tiny: Callable[[str], ResolvedModel], tmp_path_factory: pytest.TempPathFactory
         ) -> ResolvedModel:
    """A random llama whose decoder layers outweigh its embedding (64 MB: accelerate keeps
    room for the largest layer beside the ones it places in memory, so a tiny model, which
    is mostly embedding, is either whole or all on disk), with the tiny models' tokenizer."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    base = tiny("llama")
    out = tmp_path_factory.mktemp("deep")
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=8192,
                         num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                         initializer_range=0.2, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    for file in base.path.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(file, out / file.name)
    return ResolvedModel(base.spec, out, "deep")


def artifact(model: ResolvedModel) -> Artifact:
    return Artifact("transformers", model.slug, "float32", model.path, model.fingerprint, "r")


def outputs(runner: TransformersRunner) -> list[object]:
    found: list[object] = []
    for prompt in PROMPTS:
        gen = runner.generate(prompt, 16, top_k=5)
        found += [gen.tokens, gen.topk, gen.stop_reason]
        ids = list(gen.prompt_tokens) + list(gen.tokens)
        found.append(runner.sequence_logprobs(ids).tobytes())
    return found


@pytest.mark.parametrize("share", [0.0, 0.6])  # nothing in memory; about half of it
def test_offloaded_reference_is_identical(deep: ResolvedModel, tmp_path: Path,
                                          share: float) -> None:
    model = deep
    with TransformersRunner(artifact(model)) as whole:
        expected = outputs(whole)
        assert whole.plan is None
        assert not whole.offloaded
    # A budget below the model's size beside what this process holds when it loads
    # (what loading the tokenizer adds is read from a first plan).
    weights, held = weights_bytes(model.path), rss_bytes()
    with TransformersRunner(artifact(model), budget=MemoryBudget(2**40, tmp_path)) as probe:
        assert probe.plan is not None
        assert not probe.offloaded
        grown = 2**40 - probe.plan.room - working_bytes(model.path) - held
    limit = held + grown + working_bytes(model.path) + int(weights * share)
    with TransformersRunner(artifact(model), budget=MemoryBudget(limit, tmp_path)) as small:
        assert small.offloaded, small.plan
        placed = set(small.model.hf_device_map.values())
        assert "disk" in placed
        if share:
            assert "cpu" in placed, small.plan  # the layers that fit stay in memory
        assert "device_map='auto'" in small.load_call
        assert outputs(small) == expected
        left = list(tmp_path.iterdir())
    assert left
    assert not any(p.exists() for p in left)


def test_a_model_that_fits_loads_whole(tiny: Callable[[str], ResolvedModel],
                                       tmp_path: Path) -> None:
    model = tiny("llama")
    with TransformersRunner(artifact(model), budget=MemoryBudget(2**40, tmp_path)) as runner:
        assert runner.plan is not None
        assert not runner.offloaded
        assert "device_map" not in runner.load_call
        assert not hasattr(runner.model, "hf_device_map") or set(
            runner.model.hf_device_map.values()) <= {"cpu"}


def test_logprobs_identical_on_a_wholly_offloaded_model(
        tiny: Callable[[str], ResolvedModel], tmp_path: Path) -> None:
    """Teacher-forced scoring (rescore, agreement) reads the same numbers offloaded."""
    model = tiny("qwen2")
    ids = list(range(100, 140))
    with TransformersRunner(artifact(model)) as whole:
        expected = whole.sequence_logprobs(ids)
    limit = rss_bytes() + working_bytes(model.path) + weights_bytes(model.path) // 3
    with TransformersRunner(artifact(model), budget=MemoryBudget(limit, tmp_path)) as small:
        assert small.offloaded
        assert np.array_equal(small.sequence_logprobs(ids), expected)
