"""token: positional token mismatches against the oracle stay within a per-quantization bound."""

from __future__ import annotations

from pytest_groundtruth.context import Context
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.prompt_check import prompt_failure
from pytest_groundtruth.suites.quality import Weight, q_mismatches
from pytest_groundtruth.suites.result import SuiteResult, bound_of, token_table
from pytest_groundtruth.suites.spec import Suite, Work


def run(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None
    oracle = ctx.inputs.oracle(case.model, case.prompt)
    gen, artifact = ctx.results.generate(case.model, case.runtime, case.quant,
                                          case.prompt, case.device)
    failed = prompt_failure(ctx, case, oracle, gen, artifact)
    if failed is not None:
        return failed
    cmp = oracle.compare(gen.tokens, ctx.settings.near_ties)
    bound = bound_of(ctx, case, "max_mismatches")
    passed = cmp.counted <= bound.value
    n = oracle.max_new_tokens
    summary = f"{cmp.counted}/{n} positional mismatches {'<=' if passed else '>'} {bound.value}"
    if cmp.first is not None:
        summary += f"; first divergence at position {cmp.first}"
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured=cmp.counted,
        bound=bound.value,
        bound_origin=bound.origin,
        first_divergence=cmp.first,
        rows=() if cmp.first is None else token_table(
            ctx, case, oracle.tokens, gen.tokens, cmp.positions, oracle),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(gen.call,),
        # how the engine's result was obtained, where it matters (a server's token ids)
        notes=((cmp.note,) if cmp.note else ()) + gen.notes,
        details={"mismatches": cmp.mismatches, "tokens": list(gen.tokens),
                 "stop_reason": gen.stop_reason, "tokens_per_second": gen.tokens_per_second},
    )


SUITE = Suite(
    "token",
    "positional token mismatches against the oracle within a bound",
    run,
    params={
        "max_mismatches": {"int8": 3, "int4": 5, "float32": 2, "bfloat16": 3, "float16": 5,
                           "*": 5},
    },
    weight=Weight(10, q_mismatches, "the original workflow's count; weak on a small model "
                  "(one near tie makes the rest drift), so it weighs little"),
    work=frozenset({Work.GENERATE}),
    rank=20,
)
