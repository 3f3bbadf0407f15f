"""rescore: the float32 reference judges the runtime's own greedy continuation.

Black box: the runtime only has to generate (apr, a server, a command-line engine
qualify). Its tokens are teacher-forced through the float32 transformers reference
(the oracle's model) after the oracle's prompt ids, and each position is judged by how
the reference rates the runtime's choice on the runtime's own prefix
(:mod:`pytest_groundtruth.measures.rescore`): a near-tie flip costs a small gap once,
and later positions are judged on their own, so the count no longer cascades.

Per prompt (after the prompt-token check): the runtime must stop where the model's stop
rule says, and no position's gap to the reference's best token may exceed ``max_gap``.
Per artifact (variant ``nll``, all prompts pooled): the reference's mean NLL of the
runtime's continuations may exceed that of the oracle's own by at most
``max_excess_nll`` nats per token. Both bounds are per quantization, calibrated on
correct conversions by ``groundtruth calibrate`` (docs/calibration.md), or on the model's
own reference conversions (:mod:`pytest_groundtruth.framework.auto`).

The reference forward passes go through the result store, keyed by the reference model
and the token ids, so each distinct continuation is scored once, whichever runtime
produced it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.framework import rules
from pytest_groundtruth.framework.bounds import Calibration
from pytest_groundtruth.measures.rescore import (
    Rating,
    judge,
    judged_span,
    mean_nll,
    rate,
    stop_problem,
)
from pytest_groundtruth.oracle.format import REFERENCE, Oracle
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.prompt_check import prompt_failure
from pytest_groundtruth.suites.result import SuiteResult, TokenRow, bound_of
from pytest_groundtruth.suites.spec import Cell, Suite, each_artifact

PARAMS = ("max_gap", "max_excess_nll")  # calibrated
BOUNDS_FILE = "rescore_bounds.json"  # the package defaults (pytest_groundtruth/data)
POOLED = "nll"  # the variant of the per-artifact sequence-level case
# What rescoring reads from an oracle (a file in the original workflow's format lacks
# them: the test skips, saying so, before any engine runs).
NEEDS = ("prompt_tokens", "eos_token_ids", "topk")


@dataclass(frozen=True)
class Rescored:
    """The reference's ratings of one runtime continuation."""

    ratings: tuple[Rating, ...]  # the judged span: up to and including the first EOS
    call: str


def rescored(ctx: Context, model: str, oracle: Oracle, tokens: Sequence[int]) -> Rescored:
    """The reference's ratings of ``tokens`` after the oracle's prompt (made once)."""
    reference = ctx.engines.artifact(model, *REFERENCE)
    judged = list(tokens[:judged_span(tokens, oracle.eos_token_ids or ())])
    prompt = list(oracle.prompt_tokens)
    if not judged:
        return Rescored((), "nothing to score")

    def make() -> dict[str, Any]:
        runner = ctx.engines.runner(reference, alone=True)
        rows = runner.score(prompt + judged, len(prompt))
        ratings = rate(judged, np.asarray(rows))
        call = (f"{reference.recipe} -> score(<{len(prompt)} oracle prompt ids> + "
                f"<{len(judged)} runtime tokens>)")
        return {"call": call, "ratings": [r.to_json() for r in ratings]}

    def decode(data: dict[str, Any]) -> Rescored:
        return Rescored(tuple(Rating.from_json(i, r) for i, r in enumerate(data["ratings"])),
                        str(data["call"]))

    return ctx.results.cached("rescore", reference, [prompt, judged], make, decode)


def oracle_logprobs(oracle: Oracle) -> list[float]:
    """The reference's log-probability of each of the oracle's own greedy tokens."""
    return [step.logprobs[0] for step in oracle.steps]


def rating_rows(ctx: Context, case: Case, shown: Sequence[Rating], near_tie: float
                ) -> tuple[TokenRow, ...]:
    """Failure-table rows of ratings, by position: the 'oracle' columns are the judge's
    choice on the runtime's own prefix (the reference's here, the runtime's own scoring in
    the consistency suite), 'margin' the gap; a gap below ``near_tie`` is a near tie."""

    def text(token: int) -> str:
        return ctx.inputs.decode(case.model, token)

    return tuple(
        TokenRow(position=r.position, oracle_id=r.best, oracle_text=text(r.best),
                 runtime_id=r.token, runtime_text=text(r.token), oracle_logprob=r.logprob,
                 floor=None, near_tie=r.gap < near_tie, margin=r.gap)
        for r in sorted(shown, key=lambda r: r.position)
    )


def _rows(ctx: Context, case: Case, oracle: Oracle, ratings: Sequence[Rating],
          worst: Rating | None, limit: int = 8) -> tuple[TokenRow, ...]:
    """Table rows: where the runtime left the reference's choice, and the worst position."""
    flips = [r for r in ratings if r.rank > 1]
    shown = flips[:limit - 1] + ([worst] if worst is not None and worst not in flips[:limit - 1]
                                 and worst.gap > 0 else [])
    return rating_rows(ctx, case, shown, oracle.near_tie_margin)


def _per_prompt(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None
    oracle = ctx.inputs.oracle(case.model, case.prompt, needs=NEEDS)
    gen, artifact = ctx.results.generate(case.model, case.runtime, case.quant, case.prompt,
                                          case.device)
    failed = prompt_failure(ctx, case, oracle, gen, artifact)
    if failed is not None:
        return failed
    scored = rescored(ctx, case.model, oracle, gen.tokens)
    max_gap = bound_of(ctx, case, "max_gap")
    stop = stop_problem(gen.tokens, gen.stop_reason, oracle.eos_token_ids or ())
    if not gen.tokens:
        stop = "generated no tokens"
    verdict = judge(scored.ratings, oracle_logprobs(oracle), float(max_gap.value), np.inf,
                    stop)
    worst = verdict.worst
    where = ""
    if worst is not None and worst.gap > 0:
        where = (f" at position {worst.position} (runtime token {worst.token}, reference "
                 f"rank {worst.rank}; the reference's choice {worst.best})")
    summary = (f"largest gap to the reference's choice {verdict.max_gap:.3f} nats{where} "
               f"{'>' if verdict.over else '<='} {max_gap.value}")
    if verdict.over:
        summary += f"; {len(verdict.over)} position(s) over the bound"
    if stop is not None:
        summary = f"{stop}; {summary}"
    return SuiteResult(
        case=case,
        passed=verdict.passed,
        summary=summary,
        measured=round(verdict.max_gap, 4),
        bound=max_gap.value,
        bound_origin=max_gap.origin,
        first_divergence=next((r.position for r in scored.ratings if r.rank > 1), None),
        rows=() if verdict.passed else _rows(ctx, case, oracle, scored.ratings, worst),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(gen.call, scored.call),
        notes=("table: 'oracle' is the reference's choice on the runtime's own prefix "
               "(teacher forcing), not the oracle's free-running sequence; its log-probability "
               "of the runtime's token; 'margin' is the gap",)
        if not verdict.passed else (),
        details={"max_gap": verdict.max_gap, "excess_nll": verdict.excess_nll,
                 "nll": verdict.nll, "oracle_nll": verdict.oracle_nll,
                 "ranks": [r.rank for r in scored.ratings],
                 "gaps": [round(r.gap, 4) for r in scored.ratings],
                 "tokens": list(gen.tokens), "stop": stop},
    )


@dataclass(frozen=True)
class Pooled:
    """The sequence-level measure over every prompt of one artifact."""

    excess_nll: float  # mean reference NLL of the runtime's tokens minus the oracle's
    nll: float
    oracle_nll: float
    tokens: int
    per_prompt: dict[str, float]  # prompt -> its own excess NLL
    calls: tuple[str, ...]


def pooled(ctx: Context, model: str, runtime: str, quant: str, device: str = "cpu"
           ) -> Pooled:
    """Pooled excess NLL of the artifact's continuations on every prompt."""
    return pooled_of(ctx, ctx.engines.artifact(model, runtime, quant, device), device)


def pooled_of(ctx: Context, artifact: Artifact, device: str = "cpu") -> Pooled:
    """:func:`pooled` of any artifact of the model."""
    runtime_lp: list[float] = []
    oracle_lp: list[float] = []
    per_prompt: dict[str, float] = {}
    calls: list[str] = []
    model = artifact.model
    for name in ctx.prompts_for(artifact.runtime, device, model):
        oracle = ctx.inputs.oracle(model, name, needs=NEEDS)
        gen = ctx.results.generation(artifact, name, device)
        scored = rescored(ctx, model, oracle, gen.tokens)
        mine = [r.logprob for r in scored.ratings]
        theirs = oracle_logprobs(oracle)
        runtime_lp += mine
        oracle_lp += theirs
        per_prompt[name] = mean_nll(mine) - mean_nll(theirs)
        calls.append(gen.call)
    nll, oracle_nll = mean_nll(runtime_lp), mean_nll(oracle_lp)
    return Pooled(nll - oracle_nll, nll, oracle_nll, len(runtime_lp), per_prompt, tuple(calls))


def _pooled(case: Case, ctx: Context) -> SuiteResult:
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant, case.device)
    # a prompt the runtime consumed wrongly says so first
    for name in ctx.prompts_for(case.runtime, case.device, case.model):
        oracle = ctx.inputs.oracle(case.model, name, needs=NEEDS)
        gen, _ = ctx.results.generate(case.model, case.runtime, case.quant, name, case.device)
        failed = prompt_failure(ctx, case, oracle, gen, artifact)
        if failed is not None:
            return failed
    measured = pooled(ctx, case.model, case.runtime, case.quant, case.device)
    bound = bound_of(ctx, case, "max_excess_nll")
    passed = measured.excess_nll <= bound.value
    worst = max(measured.per_prompt, key=lambda n: measured.per_prompt[n])
    return SuiteResult(
        case=case,
        passed=passed,
        summary=(f"reference NLL of the runtime's continuations {measured.nll:.3f} vs the "
                 f"oracle's own {measured.oracle_nll:.3f} nats/token: excess "
                 f"{measured.excess_nll:.3f} {'<=' if passed else '>'} {bound.value} "
                 f"over {measured.tokens} tokens"),
        measured=round(measured.excess_nll, 4),
        bound=bound.value,
        bound_origin=bound.origin,
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=measured.calls,
        notes=(f"largest per-prompt excess: {worst} ({measured.per_prompt[worst]:.3f})",),
        details={"excess_nll": measured.excess_nll, "nll": measured.nll,
                 "oracle_nll": measured.oracle_nll, "tokens": measured.tokens,
                 "per_prompt": measured.per_prompt},
    )


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    """A case per artifact and prompt, and one pooled (``nll``) case per artifact."""
    per_prompt = each_artifact(suite, model, cells, prompts, settings)
    artifacts = {(c.runtime, c.quant): c for c in per_prompt}
    return per_prompt + [Case(c.suite, c.model, c.runtime, c.quant, None, None, POOLED, c.skip,
                              c.device) for c in artifacts.values()]


def oracle_nll_se(ctx: Context, model: str) -> tuple[float, int]:
    """(standard error of a pooled mean-NLL difference, tokens): from the oracle's own
    per-token NLL over every prompt."""
    values = [-lp for name in ctx.inputs.prompts
              for lp in oracle_logprobs(ctx.inputs.oracle(model, name))]
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return sd * math.sqrt(2 / n), n


def statistics(ctx: Context, artifact: Artifact) -> dict[str, Any]:
    """What the calibration reads of one correct conversion: the largest gap over every
    prompt, the pooled excess NLL and its standard error."""
    gaps = {}
    for name in ctx.prompts_for(artifact.runtime):
        oracle = ctx.inputs.oracle(artifact.model, name, needs=NEEDS)
        gen = ctx.results.generation(artifact, name)
        gaps[name] = judge(rescored(ctx, artifact.model, oracle, gen.tokens).ratings,
                           oracle_logprobs(oracle), math.inf, math.inf).max_gap
    pool = pooled_of(ctx, artifact)
    worst = max(gaps, key=lambda p: gaps[p])
    return {"max_gap": gaps[worst], "worst_prompt": worst, "excess_nll": pool.excess_nll,
            "tokens": pool.tokens, "se": oracle_nll_se(ctx, artifact.model)[0]}


def derive(stats: Sequence[Mapping[str, Any]], quant: str) -> dict[str, float]:
    """:func:`~pytest_groundtruth.framework.rules.derive_rescore` on conversions' statistics."""
    rows = [rules.RescoreMeasured("", quant, s["max_gap"], s["worst_prompt"], s["excess_nll"],
                                  s["tokens"]) for s in stats]
    return rules.derive_rescore(rows, quant, max(s["se"] for s in stats))


CALIBRATION = Calibration(BOUNDS_FILE, PARAMS, statistics, derive,
                          rule="gap: 2 x the largest correct gap; excess NLL: worst correct "
                          "+ 3 standard errors")


SUITE = Suite(
    "rescore",
    "the float32 reference rates the runtime's own continuation: every position's gap to "
    "its best token, and the excess NLL, within calibrated per-quantization bounds",
    _per_prompt,
    checks={POOLED: _pooled},
    # calibrated (docs/calibration.md): package defaults, or the model's own
    params=dict.fromkeys(PARAMS),
    calibration=CALIBRATION,
    expand=_cases,
    rank=75,
)
