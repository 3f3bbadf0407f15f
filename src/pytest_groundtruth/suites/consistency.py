"""consistency: the runtime's greedy tokens against its own teacher-forced scoring.

Black box, and free of quantization error: the runtime generates (decode, through its KV
cache), then scores the prompt ids it consumed followed by its own tokens in one pass
(prefill); every generated token must be the argmax of its own scoring at that position,
up to the float noise between the two evaluation orders
(:mod:`pytest_groundtruth.measures.consistency`). It catches faults in the generation
loop that a reference comparison cannot tell from quantization error at int4 (a dropped
or repeated prompt token, positions off by one, a KV cache kept across prompts, a
sampler that is not greedy), at every precision.

``max_gap`` is per quantization, calibrated on correct conversions by
``groundtruth calibrate`` (docs/calibration.md), or on the model's own reference
conversions (:mod:`pytest_groundtruth.framework.auto`). The own scoring goes through the result
store, keyed by the artifact and the token ids, so an unchanged re-run does no engine work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.framework import rules
from pytest_groundtruth.framework.bounds import Calibration
from pytest_groundtruth.measures.consistency import check
from pytest_groundtruth.measures.rescore import Rating, judged_span, rate
from pytest_groundtruth.runtimes.base import Artifact, Capability, Generation
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.prompt_check import prompt_failure
from pytest_groundtruth.suites.rescore import rating_rows
from pytest_groundtruth.suites.result import SuiteResult, bound_of
from pytest_groundtruth.suites.spec import Suite

PARAMS = ("max_gap",)  # calibrated
BOUNDS_FILE = "consistency_bounds.json"  # the package defaults (pytest_groundtruth/data)


@dataclass(frozen=True)
class SelfScored:
    """The runtime's own ratings of its generated tokens."""

    ratings: tuple[Rating, ...]
    call: str


def self_scored(ctx: Context, artifact: Artifact, gen: Generation,
                eos_ids: tuple[int, ...]) -> SelfScored:
    """``artifact``'s own scoring of ``gen`` (the prompt ids it consumed + its tokens)."""
    judged = list(gen.tokens[:judged_span(gen.tokens, eos_ids)])
    prompt = list(gen.prompt_tokens)
    if not judged:
        return SelfScored((), "nothing to score")
    if not prompt:
        raise RuntimeUnavailable(
            f"runtime {artifact.runtime!r} did not report the prompt token ids it consumed, "
            "so its tokens cannot be scored after them: make its generate/chat return "
            "prompt_tokens")

    def make() -> dict[str, Any]:
        runner = ctx.engines.runner(artifact)
        rows = runner.score(prompt + judged, len(prompt))
        call = (f"{artifact.recipe} -> score(<{len(prompt)} prompt ids it consumed> + "
                f"<{len(judged)} tokens it generated>)")
        return {"call": call, "ratings": [r.to_json() for r in rate(judged, np.asarray(rows))]}

    def decode(data: dict[str, Any]) -> SelfScored:
        return SelfScored(tuple(Rating.from_json(i, r) for i, r in enumerate(data["ratings"])),
                          str(data["call"]))

    return ctx.results.cached("consistency", artifact, [prompt, judged], make, decode)


def run(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None
    oracle = ctx.inputs.oracle(case.model, case.prompt)
    gen, artifact = ctx.results.generate(case.model, case.runtime, case.quant, case.prompt,
                                          case.device)
    failed = prompt_failure(ctx, case, oracle, gen, artifact)
    if failed is not None:
        return failed
    scored = self_scored(ctx, artifact, gen, tuple(oracle.eos_token_ids or ()))
    max_gap = bound_of(ctx, case, "max_gap")
    verdict = check(scored.ratings, float(max_gap.value))
    worst = verdict.worst
    where = ""
    if worst is not None and worst.gap > 0:
        where = (f" at position {worst.position} (generated {worst.token}, rank "
                 f"{worst.rank} of its own scoring, whose best is {worst.best})")
    summary = (f"largest gap between a generated token and the runtime's own scoring's best "
               f"{verdict.max_gap:.4f} nats{where} {'>' if verdict.over else '<='} "
               f"{max_gap.value}")
    if verdict.over:
        summary += f"; {len(verdict.over)} position(s) over the bound"
    rows = rating_rows(ctx, case, verdict.over[:8], float(max_gap.value))
    return SuiteResult(
        case=case,
        passed=verdict.passed,
        summary=summary,
        measured=round(verdict.max_gap, 4),
        bound=max_gap.value,
        bound_origin=max_gap.origin,
        first_divergence=next((r.position for r in scored.ratings if r.rank > 1), None),
        rows=rows,
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(gen.call, scored.call),
        notes=("table: 'oracle' is the runtime's own scoring's best token on its own prefix "
               "(prefill), 'runtime' the token it generated there (decode); 'margin' is the "
               "gap",) if not verdict.passed else (),
        details={"max_gap": verdict.max_gap, "flips": verdict.flips,
                 "gaps": [round(r.gap, 5) for r in scored.ratings],
                 "tokens": list(gen.tokens)},
    )


def statistics(ctx: Context, artifact: Artifact) -> dict[str, Any]:
    """What the calibration reads of one correct conversion: the largest gap between a
    generated token and its own scoring's best, over every prompt."""
    gaps = []
    for name in ctx.prompts_for(artifact.runtime, model=artifact.model):
        oracle = ctx.inputs.oracle(artifact.model, name)
        gen = ctx.results.generation(artifact, name)
        scored = self_scored(ctx, artifact, gen, tuple(oracle.eos_token_ids or ()))
        gaps.append(check(scored.ratings, math.inf).max_gap)
    return {"self_gap": max(gaps)}


def derive(stats: Sequence[Mapping[str, Any]], quant: str) -> dict[str, float]:
    """:func:`~pytest_groundtruth.framework.rules.derive_consistency` on conversions'
    statistics."""
    rows = [rules.RescoreMeasured("", quant, 0.0, "", 0.0, 0, s["self_gap"]) for s in stats]
    return rules.derive_consistency(rows, quant)


CALIBRATION = Calibration(BOUNDS_FILE, PARAMS, statistics, derive,
                          rule="2 x the largest correct gap to its own scoring")


SUITE = Suite(
    "consistency",
    "the runtime's greedy tokens are the argmax of its own teacher-forced scoring "
    "(decode vs prefill), within a calibrated float-noise bound",
    run,
    needs=((Capability.GENERATE,), (Capability.SCORE,)),
    # calibrated (docs/calibration.md): package defaults, or the model's own
    params=dict.fromkeys(PARAMS),
    calibration=CALIBRATION,
    rank=78,
)
