"""ppl: perplexity of the evaluation text below the model's ceiling, and the int4/int8 gap.

The evaluation text is ``eval_text`` (default prompts/eval/perplexity.txt); each result
names it and, when the oracle's perplexity record was made on the same text, reports
the float32 oracle's perplexity and the ratio.
"""

from __future__ import annotations

import hashlib

from pytest_groundtruth.oracle.format import OracleError
from pytest_groundtruth.suites.cases import Case
from pytest_groundtruth.suites.context import Workbench
from pytest_groundtruth.suites.result import SuiteResult


def run(case: Case, bench: Workbench) -> SuiteResult:
    return _gap(case, bench) if case.variant == "gap" else _ceiling(case, bench)


def _reference(case: Case, bench: Workbench) -> tuple[dict[str, float], list[str]]:
    path, text = bench.eval_text
    details: dict[str, float] = {}
    notes = [f"evaluation text: {path}"]
    try:
        record = bench.oracle_perplexity(case.model)
    except OracleError as exc:
        notes.append(f"no oracle perplexity to compare with ({exc})")
        return details, notes
    if record["text_sha256"] != hashlib.sha256(text.encode()).hexdigest():
        notes.append("the oracle perplexity record was made on another text: regenerate it "
                     "with `groundtruth oracle --force`")
    else:
        details["oracle_perplexity"] = record["perplexity"]
    return details, notes


def _ceiling(case: Case, bench: Workbench) -> SuiteResult:
    result, artifact = bench.perplexity(case.model, case.runtime, case.quant)
    bound = bench.bound(case, "ceiling")
    details, notes = _reference(case, bench)
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


def _gap(case: Case, bench: Workbench) -> SuiteResult:
    assert case.other is not None
    high, art_high = bench.perplexity(case.model, case.runtime, case.quant)
    low, art_low = bench.perplexity(case.model, case.runtime, case.other)
    bound = bench.bound(case, "max_gap")
    gap = abs(low.perplexity - high.perplexity)
    passed = gap < bound.value
    _, notes = _reference(case, bench)
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
