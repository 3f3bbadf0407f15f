"""drift: more bits must not drift more. mismatches(int8) <= mismatches(int4) + slack."""

from __future__ import annotations

from pytest_groundtruth.suites.cases import Case
from pytest_groundtruth.suites.context import Workbench
from pytest_groundtruth.suites.result import SuiteResult


def run(case: Case, bench: Workbench, device: str = "cpu") -> SuiteResult:
    assert case.prompt is not None and case.other is not None
    oracle = bench.oracle(case.model, case.prompt)
    mode = bench.settings.near_ties
    high, art_high = bench.generate(case.model, case.runtime, case.quant, case.prompt, device)
    low, art_low = bench.generate(case.model, case.runtime, case.other, case.prompt, device)
    m_high = oracle.compare(high.tokens, mode)
    m_low = oracle.compare(low.tokens, mode)
    bound = bench.bound(case, "slack")
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
