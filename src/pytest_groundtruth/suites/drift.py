"""drift: more bits must not drift more. mismatches(int8) <= mismatches(int4) + slack."""

from __future__ import annotations

from pytest_groundtruth.context import Context
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.prompt_check import prompt_failure
from pytest_groundtruth.suites.result import SuiteResult, bound_of
from pytest_groundtruth.suites.spec import Suite, each_pair


def run(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None and case.other is not None
    oracle = ctx.inputs.oracle(case.model, case.prompt)
    mode = ctx.settings.near_ties
    high, art_high = ctx.results.generate(case.model, case.runtime, case.quant,
                                           case.prompt, case.device)
    low, art_low = ctx.results.generate(case.model, case.runtime, case.other,
                                         case.prompt, case.device)
    for gen, art in ((high, art_high), (low, art_low)):
        failed = prompt_failure(ctx, case, oracle, gen, art)
        if failed is not None:
            return failed
    m_high = oracle.compare(high.tokens, mode)
    m_low = oracle.compare(low.tokens, mode)
    bound = bound_of(ctx, case, "slack")
    limit = m_low.counted + bound.value
    passed = m_high.counted <= limit
    summary = (
        f"{case.quant}: {m_high.counted} mismatches {'<=' if passed else '>'} "
        f"{case.other}: {m_low.counted} + slack {bound.value}"
    )
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured=m_high.counted,
        bound=limit,
        bound_origin=f"{case.other} mismatches + slack ({bound.origin})",
        first_divergence=m_high.first,
        artifact=f"{art_high.path} vs {art_low.path}",
        calls=(high.call, low.call),
        notes=tuple(n for n in (m_high.note, m_low.note) if n),
        details={f"mismatches_{case.quant}": m_high.counted,
                 f"mismatches_{case.other}": m_low.counted,
                 f"first_divergence_{case.quant}": m_high.first,
                 f"first_divergence_{case.other}": m_low.first},
    )


SUITE = Suite(
    "drift",
    "int8 mismatches <= int4 mismatches + slack (more bits must not drift more)",
    run,
    params={"slack": 1},
    expand=each_pair,
    rank=30,
)
