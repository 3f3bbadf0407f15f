"""canary: the int8 generation's text equals the oracle's text exactly."""

from __future__ import annotations

from pytest_groundtruth.context import Context
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.prompt_check import prompt_failure
from pytest_groundtruth.suites.quality import Weight, q_mismatches
from pytest_groundtruth.suites.result import SuiteResult, token_table
from pytest_groundtruth.suites.spec import Suite, Work


def text_difference(text: str, oracle: str, context: int = 20) -> str:
    """Where two texts first differ, each shown around that character."""
    pos = next((i for i, (a, b) in enumerate(zip(text, oracle, strict=False)) if a != b),
               min(len(text), len(oracle)))
    start = max(0, pos - context)

    def around(s: str) -> str:
        return ("..." if start else "") + repr(s[start:pos + context])

    return f"at character {pos}: {around(text)} vs oracle {around(oracle)}"


def run(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None
    oracle = ctx.inputs.oracle(case.model, case.prompt)
    gen, artifact = ctx.results.generate(case.model, case.runtime, case.quant, case.prompt)
    failed = prompt_failure(ctx, case, oracle, gen, artifact)
    if failed is not None:
        return failed
    cmp = oracle.compare(gen.tokens)
    passed = gen.text == oracle.text
    summary = (
        "text identical to the oracle"
        if passed
        else f"text differs from the oracle {text_difference(gen.text, oracle.text)} "
        f"({cmp.mismatches}/{oracle.max_new_tokens} token mismatches)"
    )
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured=cmp.mismatches,
        bound="identical text",
        first_divergence=cmp.first,
        rows=() if passed else token_table(
            ctx, case, oracle.tokens, gen.tokens, cmp.positions, oracle),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(gen.call,),
        notes=gen.notes,
        details={"text": gen.text, "oracle_text": oracle.text, "tokens": list(gen.tokens),
                 "tokens_per_second": gen.tokens_per_second},
    )


SUITE = Suite(
    "canary",
    "int8 generation's text equals the oracle text exactly",
    run,
    quantizations=("int8",),
    weight=Weight(5, q_mismatches, "exact text at int8: all or nothing, the weakest "
                  "instrument on a small model"),
    work=frozenset({Work.GENERATE}),
    rank=10,
)
