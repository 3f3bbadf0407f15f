"""ppl: perplexity of the evaluation text against the oracle's own, and the int4/int8 gap.

The evaluation text is ``eval_text`` (default prompts/eval/perplexity.txt). Each artifact
is judged relative to the float32 oracle's perplexity on the same text (its perplexity
record): ``ppl(artifact) / ppl(oracle) <= max_ratio``, a bound per quantization that
``groundtruth calibrate`` measures on correct conversions of the embedded model (and, for
``tiny:`` random-weight models, of the tiny models; docs/calibration.md), or on the
model's own reference conversions (:mod:`pytest_groundtruth.framework.auto`). A roster entry's
``ppl_ceiling`` (or a ``ceiling`` bound rule) is the original workflow's absolute bound
and applies as well: ``ppl < ceiling``. Without an oracle perplexity record and without a
ceiling there is nothing to judge by, which fails with the command that makes the record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_groundtruth.config.settings import Bound, Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.framework import rules
from pytest_groundtruth.framework.bounds import Calibration
from pytest_groundtruth.oracle.format import OracleError
from pytest_groundtruth.runtimes.base import Artifact, Capability
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.quality import Weight, q_perplexity
from pytest_groundtruth.suites.result import SuiteResult, bound_of
from pytest_groundtruth.suites.spec import Cell, Suite, Work, each_artifact, each_pair


def _reference(case: Case, ctx: Context) -> tuple[dict[str, float], list[str]]:
    path, text = ctx.inputs.eval_text
    details: dict[str, float] = {}
    notes = [f"evaluation text: {path}"]
    try:
        record = ctx.inputs.oracle_perplexity(case.model)
    except OracleError as exc:
        notes.append(f"no oracle perplexity to compare with ({exc})")
        return details, notes
    if record["text_sha256"] != hashlib.sha256(text.encode()).hexdigest():
        notes.append("the oracle perplexity record was made on another text: regenerate it "
                     "with `groundtruth oracle --force`")
    else:
        details["oracle_perplexity"] = record["perplexity"]
    return details, notes


def _ceiling(case: Case, ctx: Context) -> SuiteResult:
    result, artifact = ctx.results.perplexity(case.model, case.runtime, case.quant)
    ceiling = bound_of(ctx, case, "ceiling")
    if ceiling.value is None and ctx.settings.spec(case.model).ppl_ceiling is not None:
        ceiling = Bound(ctx.settings.spec(case.model).ppl_ceiling,
                        f"roster entry {case.model!r} (ppl_ceiling)")
    max_ratio = bound_of(ctx, case, "max_ratio")
    details, notes = _reference(case, ctx)
    ppl = result.perplexity
    verdicts: list[str] = []
    passed = True
    bounds: dict[str, float] = {}
    origins = []
    if "oracle_perplexity" in details and max_ratio.value is None:
        notes.append(f"no calibrated ratio bound for {case.quant} (`groundtruth calibrate`)")
    elif "oracle_perplexity" in details:
        ratio = ppl / details["oracle_perplexity"]
        details["ratio_to_oracle"] = ratio
        ok = ratio <= max_ratio.value
        passed &= ok
        bounds["max_ratio"] = max_ratio.value
        origins.append(f"max_ratio: {max_ratio.origin}")
        verdicts.append(f"ratio to the oracle's {details['oracle_perplexity']:.3f}: {ratio:.4f} "
                        f"{'<=' if ok else '>'} {max_ratio.value}")
    if ceiling.value is not None:
        ok = ppl < ceiling.value
        passed &= ok
        bounds["ceiling"] = ceiling.value
        origins.append(f"ceiling: {ceiling.origin}")
        verdicts.append(f"{'<' if ok else '>='} ceiling {ceiling.value}")
    if not verdicts:
        passed = False
        verdicts.append("nothing to judge it by: the model has no ppl_ceiling and there is "
                        "no oracle perplexity record (make one: `groundtruth oracle`)")
    return SuiteResult(
        case=case,
        passed=passed,
        summary=f"perplexity {ppl:.3f}; " + "; ".join(verdicts),
        measured=ppl,
        bound=bounds or None,
        bound_origin="; ".join(origins),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(result.call,),
        notes=tuple(notes),
        details={**details, "perplexity": ppl,
                 "tokens_evaluated": result.tokens_evaluated},
    )


def _gap(case: Case, ctx: Context) -> SuiteResult:
    assert case.other is not None
    high, art_high = ctx.results.perplexity(case.model, case.runtime, case.quant)
    low, art_low = ctx.results.perplexity(case.model, case.runtime, case.other)
    bound = bound_of(ctx, case, "max_gap")
    gap = abs(low.perplexity - high.perplexity)
    passed = gap < bound.value
    _, notes = _reference(case, ctx)
    return SuiteResult(
        case=case,
        passed=passed,
        summary=(f"|ppl({case.other}) - ppl({case.quant})| = |{low.perplexity:.3f} - "
                 f"{high.perplexity:.3f}| = {gap:.3f} {'<' if passed else '>='} {bound.value}"),
        measured=gap,
        bound=bound.value,
        bound_origin=bound.origin,
        artifact=f"{art_high.path} vs {art_low.path}",
        calls=(high.call, low.call),
        notes=tuple(notes),
        details={f"perplexity_{case.quant}": high.perplexity,
                 f"perplexity_{case.other}": low.perplexity},
    )


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    """A ceiling case per artifact, and a gap case per (int8, int4) pair."""
    return (each_artifact(suite, model, cells, prompts, settings)
            + each_pair(suite, model, cells, prompts, settings, variant="gap"))


PARAMS = ("max_ratio",)  # calibrated
BOUNDS_FILE = "ppl_bounds.json"  # the package defaults (pytest_groundtruth/data)


def statistics(ctx: Context, artifact: Artifact) -> dict[str, Any]:
    """What the calibration reads of one correct conversion: its perplexity of the
    evaluation text over the oracle's."""
    ppl = ctx.results.perplexity_of(artifact).perplexity
    return {"ratio": ppl / float(ctx.inputs.oracle_perplexity(artifact.model)["perplexity"])}


def derive(stats: Sequence[Mapping[str, Any]], quant: str) -> dict[str, float]:
    """:func:`~pytest_groundtruth.framework.rules.derive_ratio` on conversions' ratios."""
    return {"max_ratio": rules.derive_ratio([s["ratio"] for s in stats])}


CALIBRATION = Calibration(BOUNDS_FILE, PARAMS, statistics, derive,
                          rule="1 + 3 x the worst correct excess ratio")


SUITE = Suite(
    "ppl",
    "perplexity within a calibrated ratio of the oracle's (and below the model's ceiling, "
    "if any); |ppl(int4) - ppl(int8)| below a gap",
    _ceiling,
    checks={"gap": _gap},
    needs=((Capability.PERPLEXITY,),),
    per_prompt=False,
    params={"ceiling": None, "max_ratio": None, "max_gap": 0.5},
    calibration=CALIBRATION,
    expand=_cases,
    weight=Weight(15, q_perplexity, "whole-text damage in one number against the oracle's "
                  "perplexity; insensitive to where a flip happens"),
    work=frozenset({Work.PERPLEXITY}),
    rank=50,
)
