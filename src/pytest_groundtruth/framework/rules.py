"""The calibration rules: bounds from the statistics of correct conversions (pure).

One rule per statistic, the same whether the correct conversions are the package's
calibration set (``groundtruth calibrate --write``, docs/calibration.md states the rules
with the numbers) or the reference conversions of the model at hand (:mod:`.auto`):

* agreement (:func:`derive`): ``max_kl`` = worst correct mean KL (or llama.cpp's published
  figure, when larger) + 3 standard errors; ``min_top1`` = worst correct top-1 minus 3
  binomial standard errors; the same on the evaluation text (``text_*``); ``max_ratio``
  (ppl) = 1 + 3 x the worst correct excess perplexity ratio, at least :data:`RATIO_FLOOR`;
* rescore (:func:`derive_rescore`): ``max_gap`` = 2 x the largest gap of a correct
  continuation; ``max_excess_nll`` = worst correct excess NLL + 3 standard errors;
* consistency (:func:`derive_consistency`): ``max_gap`` = 2 x the largest gap between a
  generated token and the runtime's own scoring.

Bounds are rounded outward to two significant digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_groundtruth.oracle.format import NEAR_TIE_MARGIN

STANDARD_ERRORS = 3.0
KL_FLOOR = 1e-4
# The text case compares with the reference's log-probabilities at full precision (no
# 6-decimal rounding): its floor is float32 noise between engines and machines, which
# stays below 1e-9 here (llama.cpp against transformers at float32: ~6e-12), three
# orders of magnitude under it.
TEXT_KL_FLOOR = 1e-6
RATIO_FLOOR = 0.002
GAP_FACTOR = 2.0
LOSSLESS = ("float32", "float16", "bfloat16")  # no quantized kernels: judged on their own

# llama.cpp `llama-perplexity --kl-divergence`, Llama-3-8B, wikitext-2 (tools/perplexity README).
PUBLISHED: dict[str, dict[str, float | str]] = {
    "int8": {"top1": 0.977, "kl": 0.0014, "source": "q8_0: same top 97.7 %, KLD 0.0014"},
    "int4": {"top1": 0.919, "kl": 0.072,
             "source": "q4_0 KLD 0.072; same top of q4_K_M 91.9 % (q4_0's is not published)"},
    "float16": {"top1": 0.997, "kl": 0.000025,
                "source": "FP16 vs BF16: same top 99.7 %, KLD 0.000025"},
    "q8_0": {"top1": 0.977, "kl": 0.0014, "source": "q8_0: same top 97.7 %, KLD 0.0014"},
    "q4_k_m": {"top1": 0.919, "kl": 0.031, "source": "q4_K_M: same top 91.9 %, KLD 0.031"},
    "q4_0": {"kl": 0.072, "source": "q4_0: KLD 0.072"},
}


def round_down(x: float) -> float:
    if x <= 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(abs(x))) - 1)
    return float(math.floor(x / scale) * scale)


def round_up(x: float) -> float:
    if x <= 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(abs(x))) - 1)
    return round(math.ceil(x / scale - 1e-9) * scale, 10)


@dataclass(frozen=True)
class Measured:
    """The agreement statistics of one correct conversion."""

    model: str
    runtime: str
    quant: str
    top1: float
    kl: float
    positions: int
    ratio: float | None = None  # ppl / the oracle's ppl
    kl_se: float = 0.0  # standard error of the mean KL over its positions
    text: Measured | None = None  # the same measures on the evaluation text (agreement's text)


def derive(measured: list[Measured], quant: str, published_figures: bool = True,
           kl_floor: float = KL_FLOOR) -> dict[str, float]:
    """The agreement (and ppl ratio) bounds at ``quant`` from its correct conversions."""
    rows = [m for m in measured if m.quant == quant]
    if not rows:
        raise ValueError(f"no correct conversion was measured at {quant}")
    published = PUBLISHED.get(quant, {}) if published_figures else {}
    published_kl = float(published.get("kl", 0.0))
    max_kl = max(max(max(m.kl, published_kl) + STANDARD_ERRORS * m.kl_se for m in rows),
                 kl_floor)
    t = min([m.top1 for m in rows] + ([float(published["top1"])] if "top1" in published
                                       else []))
    n = min(m.positions for m in rows)
    min_top1 = 1 - 1 / n if t >= 1.0 else t - STANDARD_ERRORS * math.sqrt(t * (1 - t) / n)
    bounds = {"min_top1": round(round_down(min_top1), 6), "max_kl": round(round_up(max_kl), 8)}
    texts = [m.text for m in rows if m.text is not None]
    if len(texts) == len(rows):  # the evaluation text's bounds, by the same rule
        for name, value in derive(texts, quant, published_figures=False,
                                  kl_floor=TEXT_KL_FLOOR).items():
            bounds[f"text_{name}"] = value
    ratios = [m.ratio for m in rows if m.ratio is not None]
    if ratios:
        bounds["max_ratio"] = derive_ratio(ratios)
    return bounds


def derive_ratio(ratios: list[float]) -> float:
    """``max_ratio`` (ppl of a conversion / the oracle's) from correct conversions' ratios."""
    excess = max(3 * (max(ratios) - 1), RATIO_FLOOR)
    return round(1 + round_up(excess), 8)


@dataclass(frozen=True)
class RescoreMeasured:
    """The rescore (and consistency) statistics of one correct conversion."""

    runtime: str
    quant: str
    max_gap: float  # over every prompt
    worst_prompt: str
    excess_nll: float  # pooled
    tokens: int
    self_gap: float | None = None  # consistency: largest gap to its own scoring's best


def derive_rescore(measured: list[RescoreMeasured], quant: str, se: float
                   ) -> dict[str, float]:
    """The rescore bounds at ``quant``; ``se``: the standard error of a pooled mean-NLL
    difference (from the oracle's own per-token NLL)."""
    rows = [m for m in measured if m.quant == quant]
    if not rows:
        raise ValueError(f"no correct conversion was measured at {quant}")
    gap = max(NEAR_TIE_MARGIN, GAP_FACTOR * max(m.max_gap for m in rows))
    excess = max(0.0, max(m.excess_nll for m in rows)) + STANDARD_ERRORS * se
    return {"max_gap": round_up(gap), "max_excess_nll": round_up(excess)}


def derive_consistency(measured: list[RescoreMeasured], quant: str) -> dict[str, float]:
    """The consistency bound at ``quant``: a lossy quantization pools every lossy one of
    the same runtimes (the gap comes from the engine's quantized kernels, not one type)."""
    rows = [m for m in measured if m.quant == quant and m.self_gap is not None]
    if not rows:
        raise ValueError(f"no correct conversion was self-scored at {quant}")
    runtimes = {m.runtime for m in rows}
    pool = rows if quant in LOSSLESS else [
        m for m in measured
        if m.runtime in runtimes and m.quant not in LOSSLESS and m.self_gap is not None]
    gap = max(m.self_gap for m in pool if m.self_gap is not None)
    return {"max_gap": round_up(max(NEAR_TIE_MARGIN, GAP_FACTOR * gap))}
