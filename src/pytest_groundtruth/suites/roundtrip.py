"""roundtrip: export the artifact to GGUF, reimport it, and get the artifact's own tokens back.

The reference is the artifact's own generation, not the oracle's: a lossless
export/reimport must not change a single token, whatever the quantization drift. The
reimport keeps every tensor at its own type in the exported file (a K-quant mix stays a
K-quant mix, Q4_0 token embeddings stay Q4_0), so the suite tests the conversion path,
not the exporter's choice of types. It runs at the original workflow's int4 and at every
type of llama.cpp's quantizer (q4_k_m, q6_k, ...).
"""

from __future__ import annotations

from pytest_groundtruth.context import Context
from pytest_groundtruth.ggufio.quants import CATALOG
from pytest_groundtruth.measures.sequences import compare
from pytest_groundtruth.runtimes.base import Capability
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.quality import Weight, q_mismatches
from pytest_groundtruth.suites.result import SuiteResult, bound_of, token_table
from pytest_groundtruth.suites.spec import Suite, Work


def run(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None
    original, artifact = ctx.results.generate(case.model, case.runtime, case.quant, case.prompt)
    reimported = ctx.results.roundtrip(case.model, case.runtime, case.quant)
    again = ctx.results.generation(reimported, case.prompt)
    cmp = compare(original.tokens, again.tokens)
    bound = bound_of(ctx, case, "max_mismatches")
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
        rows=() if cmp.first is None else token_table(
            ctx, case, original.tokens, again.tokens, cmp.positions),
        artifact=f"{artifact.path} -> {reimported.path}",
        recipe=reimported.recipe,
        calls=(original.call, again.call),
        details={"tokens": list(original.tokens), "reimported_tokens": list(again.tokens)},
    )


SUITE = Suite(
    "roundtrip",
    "export the int4 (and every llama.cpp type's) artifact to GGUF, reimport: tokens "
    "identical to the artifact's own",
    run,
    needs=((Capability.EXPORT_GGUF,), (Capability.REIMPORT,)),
    quantizations=("int4", *CATALOG),
    params={"max_mismatches": 0},
    weight=Weight(5, q_mismatches, "export + reimport losslessness: a converter "
                  "property more than the runtime's quality"),
    work=frozenset({Work.GENERATE, Work.ROUNDTRIP}),
    rank=40,
)
