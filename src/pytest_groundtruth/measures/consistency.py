"""Prefill/decode consistency: a runtime's greedy tokens against its own scoring.

A greedy generation decodes one token at a time through the engine's KV cache; scoring
the prompt and those same tokens in one teacher-forced pass (prefill) must give, at
every generated position, the generated token as the argmax, up to the float noise
between the two evaluation orders (a near tie may flip). This is the equivalence
engines test of themselves (llama.cpp's batched against sequential evaluation, vLLM's
chunked-prefill and prefix-caching tests), taken here from outside.

No reference model and no quantization error enter: both sides are the same engine on
the same file, so a fault in the generation loop (a prompt token dropped or evaluated
twice, positions off by one, a KV cache kept across requests, a sampler that is not
greedy) shows at any precision, however lossy the quantization. A fault the engine
makes in both paths alike (a wrong RoPE base, a bad weight) does not: the reference
suites judge those.

The ratings are :class:`~pytest_groundtruth.measures.rescore.Rating` values with the
runtime's own score rows in the reference's place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_groundtruth.measures.rescore import Rating


@dataclass(frozen=True)
class ConsistencyVerdict:
    passed: bool
    worst: Rating | None  # the generated token its own scoring likes least (None: no tokens)
    over: tuple[Rating, ...]  # positions whose gap exceeds the bound
    flips: int  # positions where the generated token is not the scoring's argmax

    @property
    def max_gap(self) -> float:
        return self.worst.gap if self.worst is not None else 0.0


def check(ratings: Sequence[Rating], max_gap: float) -> ConsistencyVerdict:
    """Passes when no generated token trails its own scoring's best by more than
    ``max_gap`` nats."""
    worst = max(ratings, key=lambda r: (r.gap, -r.position)) if ratings else None
    over = tuple(r for r in ratings if r.gap > max_gap)
    flips = sum(1 for r in ratings if r.rank > 1)
    return ConsistencyVerdict(not over, worst, over, flips)
