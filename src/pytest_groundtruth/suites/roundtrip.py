"""roundtrip: export the artifact to GGUF, reimport it, and get the artifact's own tokens back.

The reference is the artifact's own generation, not the oracle's: a lossless
export/reimport must not change a single token, whatever the quantization drift.
"""

from __future__ import annotations

from pytest_groundtruth.measures.sequences import compare
from pytest_groundtruth.suites.cases import Case
from pytest_groundtruth.suites.context import Workbench
from pytest_groundtruth.suites.result import SuiteResult


def run(case: Case, bench: Workbench) -> SuiteResult:
    assert case.prompt is not None
    original, artifact = bench.generate(case.model, case.runtime, case.quant, case.prompt)
    reimported = bench.roundtrip(case.model, case.runtime, case.quant)
    again = bench.generate_artifact(reimported, case.prompt)
    cmp = compare(original.tokens, again.tokens)
    bound = bench.bound(case, "max_mismatches")
    passed = cmp.counted <= bound.value
    summary = (
        f"{cmp.counted}/{len(original.tokens)} tokens differ after GGUF export + reimport "
        f"({'<=' if passed else '>'} {bound.value})"
    )
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured=cmp.counted,
        bound=bound.value,
        bound_origin=bound.origin,
        first_divergence=cmp.first,
        rows=() if cmp.first is None else bench.token_table(
            case, original.tokens, again.tokens, cmp.positions),
        artifact=f"{artifact.path} -> {reimported.path}",
        recipe=reimported.recipe,
        calls=(original.call, again.call),
        details={"tokens": list(original.tokens), "reimported_tokens": list(again.tokens)},
    )
