"""Every generation records its speed: time to first token and per-token latency.

The runners' own clocks on real engines (transformers through a ``generate()`` streamer,
llama.cpp in its decoding loop), and the pure helpers that pool and summarise them. No
assertion on how fast anything is: timings are measured, never a default check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.measures.timing import intervals, percentile, speed
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare


@given(st.lists(st.floats(0, 1e3), min_size=1, max_size=200), st.floats(0.01, 100))
def test_percentile_is_a_sample_and_monotone(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p in values
    assert percentile(values, 100) == max(values)
    assert percentile(values, q) <= percentile(values, min(100.0, q + 10))


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0  # few samples: p99 is the slowest
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_intervals_and_speed() -> None:
    first, steps = intervals(10.0, [10.5, 10.7, 11.0])
    assert first == pytest.approx(0.5)
    assert steps == pytest.approx((0.2, 0.3))
    assert intervals(1.0, []) == (None, ())
    pooled = speed([(3, 1.0, 0.5, (0.2, 0.3)), (2, 1.0, None, (0.1,))])
    assert pooled.tokens == 5
    assert pooled.tokens_per_second == pytest.approx(2.5)
    assert pooled.first_token_ms == pytest.approx(500)
    assert pooled.p50_ms == pytest.approx(200)
    assert pooled.p99_ms == pytest.approx(300)
    assert speed([(1, 1.0, None, ())]).p99_ms is None


@pytest.mark.slow
@pytest.mark.parametrize("runtime", [
    "transformers",
    pytest.param("llamacpp", marks=pytest.mark.requires_llamacpp),
])
def test_a_generation_records_time_to_first_token_and_each_step(
    runtime: str, tiny: Callable[[str], ResolvedModel], gt_cache: Path, tmp_path: Path,
) -> None:
    rt = make_runtime(runtime, Settings(root=tmp_path))
    model = tiny("llama")
    artifact = prepare(rt, model, "float32", ArtifactCache(gt_cache))
    with rt.open(artifact, model) as runner:
        gen = runner.generate("The capital of France is", 12)
    assert len(gen.tokens) == 12
    assert gen.first_token_seconds is not None
    assert 0 < gen.first_token_seconds < gen.seconds
    assert len(gen.step_seconds) == len(gen.tokens) - 1
    assert all(s > 0 for s in gen.step_seconds)
    assert gen.first_token_seconds + sum(gen.step_seconds) <= gen.seconds + 1e-6
    again = type(gen).from_json(gen.to_json())
    assert again.step_seconds == gen.step_seconds
