"""llama.cpp's logits buffers under a memory budget (docs/memory.md).

With ``logits_all`` llama.cpp holds ``n_batch x n_vocab`` float32 logits twice while it
evaluates a batch; under a budget ``n_batch`` is sized so that they take at most an
eighth of it. The logits must not change with it: the same tokens and log-probabilities,
bit for bit, whatever the batch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pytest_groundtruth.config.roster import BUILTIN
from pytest_groundtruth.models.sources import resolve
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.llamacpp import DEFAULT_BATCH, MIN_BATCH, logits_batch
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

MIB = 2**20


def test_the_batch_is_llama_cpps_own_unless_its_logits_outgrow_the_budget() -> None:
    assert logits_batch(None, 49152) is None
    assert logits_batch(20 * 1024 * MIB, 49152) is None  # 192 MiB of 2.5 GiB
    assert logits_batch(20 * 1024 * MIB, 262144) is None  # Gemma 3: 1 GiB of 2.5
    assert logits_batch(384 * MIB, 49152) == 128  # 48 MiB: 128 x 384 KiB
    assert logits_batch(768 * MIB, 262144) == MIN_BATCH  # 2 MiB a position
    for budget in (64, 256, 1024, 4096):
        n = logits_batch(budget * MIB, 32000)
        assert n is None or (MIN_BATCH <= n < DEFAULT_BATCH and n & (n - 1) == 0)


@pytest.fixture(scope="module")
def smollm2_int8(gt_cache: Path) -> Artifact:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'pytest-groundtruth[llamacpp]'")
    from pytest_groundtruth.runtimes.llamacpp import LlamaCppRuntime

    model = resolve(BUILTIN["smollm2-135m"], gt_cache)
    return prepare(LlamaCppRuntime(), model, "int8", ArtifactCache(gt_cache))


def _rss_growth_of_scoring(artifact: Artifact, budget: int | None, ids: list[int]
                           ) -> tuple[int, np.ndarray, tuple[int, ...], str]:
    from pytest_groundtruth.core.budget import peak_bytes, reset_peak, rss_bytes
    from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(artifact, n_threads=1, memory_budget=budget)
    try:
        before = rss_bytes()
        reset_peak()
        rows = runner.sequence_logprobs(ids)
        grew = peak_bytes() - before
        gen = runner.generate("The capital of France is", 8)
        return grew, rows, gen.tokens, runner.load_call
    finally:
        runner.close()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                    reason="the peak is read from Linux's /proc/self/status")
def test_a_budget_bounds_the_logits_buffers_and_changes_no_logit(
        smollm2_int8: Artifact) -> None:
    ids = [1, *range(300, 540)]  # 241 positions, as the evaluation text
    grew, rows, tokens, call = _rss_growth_of_scoring(smollm2_int8, None, ids)
    small, rows_b, tokens_b, call_b = _rss_growth_of_scoring(smollm2_int8, 384 * MIB, ids)
    assert "n_batch" not in call
    assert "n_batch=128" in call_b
    assert tokens_b == tokens
    assert np.array_equal(rows_b, rows)  # bit for bit
    assert grew - small >= 40 * MIB, (grew / MIB, small / MIB)  # 241-row buffers less
