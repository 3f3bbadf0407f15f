"""ppl: perplexity of the evaluation text below the model's ceiling, and the int4/int8 gap.

The evaluation text is ``eval_text`` (default prompts/eval/perplexity.txt); each result
names it and, when the oracle's perplexity record was made on the same text, reports
the float32 oracle's perplexity and the ratio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.oracle.format import OracleError
from pytest_groundtruth.runtimes.base import Capability
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult, bound_of
from pytest_groundtruth.suites.spec import Cell, Suite, each_artifact, each_pair


def run(case: Case, ctx: Context) -> SuiteResult:
    return _gap(case, ctx) if case.variant == "gap" else _ceiling(case, ctx)


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
    bound = bound_of(ctx, case, "ceiling")
    details, notes = _reference(case, ctx)
    passed = result.perplexity < bound.value
    summary = f"perplexity {result.perplexity:.3f} {'<' if passed else '>='} ceiling {bound.value}"
    if "oracle_perplexity" in details:
        ratio = result.perplexity / details["oracle_perplexity"]
        details["ratio_to_oracle"] = ratio
        summary += f" (oracle {details['oracle_perplexity']:.3f}, ratio {ratio:.3f})"
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured=result.perplexity,
        bound=bound.value,
        bound_origin=bound.origin,
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(result.call,),
        notes=tuple(notes),
        details={**details, "perplexity": result.perplexity,
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


SUITE = Suite(
    "ppl",
    "perplexity below the model's ceiling; |ppl(int4) - ppl(int8)| below a gap",
    run,
    needs=((Capability.PERPLEXITY,),),
    per_prompt=False,
    params={"ceiling": None, "max_gap": 0.5},
    expand=_cases,
    rank=50,
)
