"""cuda: the GPU precision ladder of the transformers reference.

bf16 <= 3/32 and fp16 <= 5/32 mismatches against the float32 oracle; bf16 against fp16
<= 3/32; drift(bf16) <= drift(fp16). Skips with a reason where CUDA is absent.
"""

from __future__ import annotations

from pytest_groundtruth.measures.sequences import compare
from pytest_groundtruth.suites import drift, token
from pytest_groundtruth.suites.cases import Case
from pytest_groundtruth.suites.context import Workbench
from pytest_groundtruth.suites.result import SuiteResult

DEVICE = "cuda"


def run(case: Case, bench: Workbench) -> SuiteResult:
    bench.runtime(case.runtime, DEVICE)  # raises RuntimeUnavailable without CUDA
    if case.variant == "drift":
        return drift.run(case, bench, DEVICE)
    if case.variant == "pair":
        return _pair(case, bench)
    return token.run(case, bench, DEVICE)


def _pair(case: Case, bench: Workbench) -> SuiteResult:
    assert case.prompt is not None and case.other is not None
    a, art_a = bench.generate(case.model, case.runtime, case.quant, case.prompt, DEVICE)
    b, _ = bench.generate(case.model, case.runtime, case.other, case.prompt, DEVICE)
    cmp = compare(b.tokens, a.tokens)
    bound = bench.bound(case, "pair_max_mismatches")
    passed = cmp.counted <= bound.value
    return SuiteResult(
        case=case,
        passed=passed,
        summary=(f"{case.quant} vs {case.other}: {cmp.counted} mismatches "
                 f"{'<=' if passed else '>'} {bound.value}"),
        measured=cmp.counted,
        bound=bound.value,
        bound_origin=bound.origin,
        first_divergence=cmp.first,
        rows=() if cmp.first is None else bench.token_table(
            case, b.tokens, a.tokens, cmp.positions),
        artifact=f"{art_a.path} ({case.quant}, {case.other})",
        calls=(a.call, b.call),
    )
