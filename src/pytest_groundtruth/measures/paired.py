"""A paired comparison: is an artifact worse than a correct conversion of the same types?

Both are scored on the same token positions (teacher forcing), so each position gives a
difference d = KL(reference || artifact) - KL(reference || correct conversion) in which
what the two share (the quantization noise of those types on that text) cancels. Their
mean says by how much the artifact is worse; :func:`judge` bounds it with a one-sided
confidence interval and fails only when the whole interval lies above the margin.

The interval is over *blocks*, not positions: next-token distributions at neighbouring
positions share context, so per-position differences are correlated (a damaged
attention head raises the KL of a run of positions), and a per-position standard error
would be too small. The differences are averaged per block (a prompt, or
:data:`BLOCK` consecutive positions of the evaluation text), and the block means, nearly
independent, give a Student t interval (batch means). With a correct artifact of the same
types the differences are zero or float noise around zero; the margin is relative to the
correct conversion's own mean KL (``margin`` x it, at least ``floor`` nats), so "worse by
more than the margin" reads the same at float32 and at 2 bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BLOCK = 16  # positions of the evaluation text per block
CONFIDENCE = 0.99  # one-sided


def t_quantile(p: float, df: int) -> float:
    """Student t quantile (Cornish-Fisher expansion of the normal quantile; within 1e-3 of
    the exact value for df >= 5 at p = 0.99)."""
    z = _normal_quantile(p)
    v = float(max(df, 1))
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3))


def _normal_quantile(p: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(100):  # bisection on the normal CDF
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def blocks(positions: Mapping[str, Sequence[float]], size: int = BLOCK,
           split: Sequence[str] = ()) -> list[list[float]]:
    """The blocks of ``positions`` (name -> per-position values): one per name, except the
    names in ``split`` (long texts), cut into runs of ``size`` (a short tail joins the
    block before it)."""
    out: list[list[float]] = []
    for name, values in positions.items():
        values = list(values)
        if not values:
            continue
        if name not in split:
            out.append(values)
            continue
        runs = [values[i:i + size] for i in range(0, len(values), size)]
        if len(runs) > 1 and len(runs[-1]) < size // 2:
            tail = runs.pop()
            runs[-1] = runs[-1] + tail
        out.extend(runs)
    return out


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # one-sided lower confidence bound
    high: float  # one-sided upper confidence bound
    blocks: int
    positions: int


def interval(diffs: Sequence[Sequence[float]], confidence: float = CONFIDENCE) -> Interval:
    """The mean per-position difference over blocks, with one-sided ``confidence`` bounds
    from the block means (each block weighs as much as its positions)."""
    sizes = [len(b) for b in diffs if b]
    means = [sum(b) / len(b) for b in diffs if b]
    n = sum(sizes)
    if not means:
        raise ValueError("no positions to compare")
    mean = sum(m * s for m, s in zip(means, sizes, strict=True)) / n
    k = len(means)
    if k < 2:
        return Interval(mean, -math.inf, math.inf, k, n)
    # weighted batch-means variance of the mean
    spread = sum(s * s * (m - mean) ** 2 for m, s in zip(means, sizes, strict=True))
    var = spread / (n * n) * k / (k - 1)
    half = t_quantile(confidence, k - 1) * math.sqrt(var)
    return Interval(mean, mean - half, mean + half, k, n)


@dataclass(frozen=True)
class PairedVerdict:
    kl: Interval  # KL(reference || artifact) - KL(reference || correct conversion)
    reference_kl: float  # the correct conversion's own mean KL
    margin: float  # nats: how much worse the artifact may be
    nll: Interval | None = None  # NLL difference of the text's tokens, where measured

    @property
    def passed(self) -> bool:
        return self.kl.low <= self.margin

    @property
    def relative(self) -> float:
        """The mean excess as a fraction of the correct conversion's mean KL."""
        return self.kl.mean / self.reference_kl if self.reference_kl > 0 else math.inf


def judge(artifact_kl: Mapping[str, Sequence[float]], reference_kl: Mapping[str, Sequence[float]],
          margin: float, floor: float, split: Sequence[str] = (),
          artifact_nll: Mapping[str, Sequence[float]] | None = None,
          reference_nll: Mapping[str, Sequence[float]] | None = None,
          confidence: float = CONFIDENCE) -> PairedVerdict:
    """The paired verdict: per-position KL differences (same names, same lengths) in blocks;
    the allowed excess is ``max(floor, margin x the correct conversion's mean KL)``."""
    def diff(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]]
             ) -> dict[str, list[float]]:
        if set(a) != set(b) or any(len(a[n]) != len(b[n]) for n in a):
            raise ValueError("the artifact and the correct conversion were scored on "
                             "different positions")
        return {n: [x - y for x, y in zip(a[n], b[n], strict=True)] for n in a}

    kl = interval(blocks(diff(artifact_kl, reference_kl), split=split), confidence)
    pooled = [v for values in reference_kl.values() for v in values]
    ref_mean = sum(pooled) / len(pooled) if pooled else 0.0
    nll = None
    if artifact_nll is not None and reference_nll is not None:
        nll = interval(blocks(diff(artifact_nll, reference_nll), split=split), confidence)
    return PairedVerdict(kl, ref_mean, max(floor, margin * ref_mean), nll)
