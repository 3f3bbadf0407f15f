"""drift: more bits must not drift more. mismatches(higher) <= mismatches(lower) + slack.

The original workflow compares int8 with int4; the same claim holds for any two
quantizations ordered by bits per weight (llama.cpp's documented sizes for its types,
:func:`~pytest_groundtruth.ggufio.quants.bits_per_weight`). The cases are the original
(int8, int4) pair when both are configured, and each configured quantization against the
next lower level of bits per weight (aliases of one GGUF type, such as int4 and q4_0, are
one level), so N levels make N - 1 pairs rather than N^2.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.ggufio.quants import bits_per_weight
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.prompt_check import prompt_failure
from pytest_groundtruth.suites.quality import Weight, q_mismatches
from pytest_groundtruth.suites.result import SuiteResult, bound_of
from pytest_groundtruth.suites.spec import PAIRS, Cell, Suite, Work


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
    bits = {q: bits_per_weight(q) for q in (case.quant, case.other)}
    summary = (
        f"{case.quant} ({bits[case.quant]:.2f} bpw): {m_high.counted} mismatches "
        f"{'<=' if passed else '>'} {case.other} ({bits[case.other]:.2f} bpw): "
        f"{m_low.counted} + slack {bound.value}"
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
                 f"first_divergence_{case.other}": m_low.first,
                 "bits_per_weight": bits},
    )


def ordered_pairs(quantizations: Sequence[str]) -> list[tuple[str, str]]:
    """(higher, lower) pairs of ``quantizations``: the original pairs, then each level of
    bits per weight against the next lower one."""
    known = {q: b for q in quantizations if (b := bits_per_weight(q)) is not None}
    pairs = [(h, lo) for h, lo in PAIRS if h in known and lo in known]
    levels = sorted(set(known.values()), reverse=True)
    for upper, lower in itertools.pairwise(levels):
        for high in (q for q in known if known[q] == upper):
            pairs += [(high, low) for low in known if known[low] == lower
                      and (high, low) not in pairs]
    return pairs


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    cases: list[Case] = []
    for cell in cells:
        for high, low in ordered_pairs(cell.quantizations):
            base = Case(suite.name, model, cell.runtime, high, other=low,
                        skip=suite.gap(cell), device=suite.device)
            cases.extend(replace(base, prompt=p) for p in prompts)
    return cases


SUITE = Suite(
    "drift",
    "more bits must not drift more: mismatches(int8) <= mismatches(int4) + slack, and any "
    "two quantizations ordered by bits per weight",
    run,
    params={"slack": 1},
    expand=_cases,
    # A pair test (int8 against int4) belongs to neither combination: it colours its
    # own matrix row and never enters a score.
    weight=Weight(0, q_mismatches, "pair test: colours its matrix row, never scored"),
    work=frozenset({Work.GENERATE}),
    rank=30,
)
