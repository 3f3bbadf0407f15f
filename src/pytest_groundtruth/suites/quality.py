"""How a suite's measured value becomes a quality in [0, 1] for the qualification score.

A suite declares its :class:`Weight` (weight, quality function, and the reason for the
weight that docs/qualification.md prints) on its :class:`~pytest_groundtruth.suites.spec.Suite`;
the score (:mod:`pytest_groundtruth.report.score`) reads it from the registry, so a suite
from another package is scored like a built-in one. The quality functions below are
the built-in suites'; each maps a :class:`SuiteResult` to 1 at a perfect measurement,
:data:`AT_BOUND` exactly at the test's bound, falling linearly to 0 at :data:`BEYOND`
times the bound (or at the worst value the measure can take).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_groundtruth.suites.result import SuiteResult

AT_BOUND = 0.8  # the quality of a measurement exactly at its bound
BEYOND = 3.0  # past the bound, quality reaches 0 at this multiple of it
WORST_MISMATCHES = 32  # max_new_tokens of the reference workflow: every position differs
DEFAULT_WEIGHT = 10.0


def headroom(measured: float, bound: float, worst: float) -> float:
    """1 at ``measured`` <= 0, 0.8 at the bound, 0 at ``worst`` (linear in between)."""
    if measured <= 0:
        return 1.0
    if bound > 0 and measured <= bound:
        return 1.0 - (1.0 - AT_BOUND) * measured / bound
    if worst <= bound:
        return 0.0
    return max(0.0, AT_BOUND * (worst - measured) / (worst - max(bound, 0.0)))


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def q_mismatches(r: SuiteResult) -> float:
    """Token counts (token, canary, roundtrip, cuda): mismatches against the bound."""
    m = _number(r.measured)
    return headroom(m, _number(r.bound), max(WORST_MISMATCHES, m))


def q_topk(r: SuiteResult) -> float:
    """vLLM's rule: 1 with no divergence; at a divergence inside the top-k, 1 for rank 1
    down to 0.8 for rank k (the worse of the two sides' ranks); outside it, 0."""
    if not r.passed:
        return 0.0
    if r.first_divergence is None:
        return 1.0
    k = int(_number(r.details.get("k"), 5))
    ranks = [_number(r.details.get(s), k) for s in ("oracle_rank_of_runtime",
                                                     "runtime_rank_of_oracle")]
    return 1.0 - (1.0 - AT_BOUND) * (max(ranks) - 1) / max(k - 1, 1)


def q_agreement(r: SuiteResult) -> float:
    """Teacher-forced top-1 agreement (its shortfall from 1) and KL, each against its
    bound, averaged."""
    measured = r.measured if isinstance(r.measured, dict) else {}
    bound = r.bound if isinstance(r.bound, dict) else {}
    prefix = "text_" if "text_max_kl" in bound else ""  # the text case's bounds
    deficit = 1.0 - _number(measured.get("top1"))
    allowed = 1.0 - _number(bound.get(f"{prefix}min_top1"))
    kl, max_kl = _number(measured.get("kl")), _number(bound.get(f"{prefix}max_kl"))
    return (headroom(deficit, allowed, min(1.0, BEYOND * allowed))
            + headroom(kl, max_kl, BEYOND * max_kl)) / 2


def q_perplexity(r: SuiteResult) -> float:
    """Perplexity above the oracle's, against the ceiling's distance from the oracle's
    (the perplexity itself against the ceiling when no oracle record was comparable);
    the int8/int4 gap against its bound."""
    if r.case.variant == "gap":
        gap, max_gap = _number(r.measured), _number(r.bound)
        return headroom(gap, max_gap, BEYOND * max_gap)
    # the bound is {"max_ratio": r, "ceiling": c} (a calibrated ratio to the oracle's
    # perplexity, and the roster's ceiling where it has one), or a bare ceiling
    bound = r.bound if isinstance(r.bound, dict) else {"ceiling": r.bound}
    ratio = _number(r.details.get("ratio_to_oracle"), 0.0)
    max_ratio = _number(bound.get("max_ratio"), 0.0)
    if ratio > 0 and max_ratio > 1:
        room = max_ratio - 1
        return headroom(max(0.0, ratio - 1), room, BEYOND * room)
    ppl, ceiling = _number(r.measured), _number(bound.get("ceiling"))
    oracle = _number(r.details.get("oracle_perplexity"), 0.0)
    if oracle and ceiling > oracle:
        excess, room = max(0.0, ppl - oracle), ceiling - oracle
    else:
        excess, room = ppl, ceiling
    return headroom(excess, room, BEYOND * room)


def q_integrity(r: SuiteResult) -> float:
    """Findings on the file: none is 1, each one costs a tenth below the bound's 0.8."""
    return 1.0 if r.passed else headroom(_number(r.measured), 0.0, 10.0)


def q_verdict(r: SuiteResult) -> float:
    """A suite with no measure of its own: 1 when it passed, 0 when it failed."""
    return 1.0 if r.passed else 0.0


@dataclass(frozen=True)
class Weight:
    weight: float
    quality: Callable[[SuiteResult], float]
    reason: str  # docs/qualification.md prints these


# A suite that declares no weight counts by its verdict at the default weight (its reason
# is empty: docs/qualification.md lists only the declared weights).
VERDICT = Weight(DEFAULT_WEIGHT, q_verdict, "")
