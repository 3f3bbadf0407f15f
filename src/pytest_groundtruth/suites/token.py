"""token: positional token mismatches against the oracle stay within a per-quantization bound."""

from __future__ import annotations

from pytest_groundtruth.suites.cases import Case
from pytest_groundtruth.suites.context import Workbench
from pytest_groundtruth.suites.result import SuiteResult


def run(case: Case, bench: Workbench, device: str = "cpu") -> SuiteResult:
    assert case.prompt is not None
    oracle = bench.oracle(case.model, case.prompt)
    gen, artifact = bench.generate(case.model, case.runtime, case.quant, case.prompt, device)
    cmp = oracle.compare(gen.tokens, bench.settings.near_ties)
    bound = bench.bound(case, "max_mismatches")
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
        rows=() if cmp.first is None else bench.token_table(
            case, oracle.tokens, gen.tokens, cmp.positions, oracle),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(gen.call,),
        notes=(cmp.note,) if cmp.note else (),
        details={"mismatches": cmp.mismatches, "tokens": list(gen.tokens),
                 "stop_reason": gen.stop_reason, "tokens_per_second": gen.tokens_per_second},
    )
