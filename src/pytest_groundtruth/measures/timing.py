"""Generation speed from a runner's timings: tokens/s, time to first token, per-token latency.

Pure functions over the seconds a :class:`~pytest_groundtruth.runtimes.base.Generation`
records. Percentiles are nearest-rank (the smallest value with at least ``q`` of the
samples at or below it): with the few dozen tokens of a parity run, p99 is the slowest
token, which is what a latency floor should be checked against.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


def intervals(start: float, stamps: Sequence[float]) -> tuple[float | None, tuple[float, ...]]:
    """(time to the first token, seconds between successive tokens) from the clock
    reading at the start and one per generated token."""
    first = stamps[0] - start if stamps else None
    return first, tuple(b - a for a, b in itertools.pairwise(stamps))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in (0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile q must be in (0, 100], got {q}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Speed:
    """Timings of one or more generations."""

    tokens: int
    seconds: float
    first_token_ms: float | None  # mean over the generations that report it
    p50_ms: float | None  # per-token latency after the first token
    p99_ms: float | None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.inf

    def to_json(self) -> dict[str, float | int | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {"tokens": self.tokens, "seconds": round(self.seconds, 4),
                "tokens_per_second": r(self.tokens_per_second),
                "first_token_ms": r(self.first_token_ms), "p50_ms": r(self.p50_ms),
                "p99_ms": r(self.p99_ms)}


def speed(runs: Sequence[tuple[int, float, float | None, Sequence[float]]]) -> Speed:
    """Pool ``(tokens, seconds, first_token_seconds, step_seconds)`` of generations."""
    steps = [s for _, _, _, run in runs for s in run]
    firsts = [f for _, _, f, _ in runs if f is not None]
    return Speed(
        tokens=sum(t for t, _, _, _ in runs),
        seconds=sum(s for _, s, _, _ in runs),
        first_token_ms=1000 * sum(firsts) / len(firsts) if firsts else None,
        p50_ms=1000 * percentile(steps, 50) if steps else None,
        p99_ms=1000 * percentile(steps, 99) if steps else None,
    )
