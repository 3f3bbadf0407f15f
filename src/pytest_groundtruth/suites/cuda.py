"""cuda: the GPU precision ladder of the transformers reference.

bf16 <= 3/32 and fp16 <= 5/32 mismatches against the float32 oracle; bf16 against fp16
<= 3/32; drift(bf16) <= drift(fp16). Skips with a reason where CUDA is absent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.measures.near_ties import compare
from pytest_groundtruth.suites import drift, token
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.quality import Weight, q_mismatches
from pytest_groundtruth.suites.result import SuiteResult, bound_of, token_table
from pytest_groundtruth.suites.spec import Cell, Suite

DEVICE = "cuda"
RUNTIME = "transformers"  # the reference, at GPU precisions


def on_cuda(check: Callable[[Case, Context], SuiteResult]
            ) -> Callable[[Case, Context], SuiteResult]:
    """``check`` once the runtime is up on the GPU (RuntimeUnavailable without CUDA)."""

    def run(case: Case, ctx: Context) -> SuiteResult:
        ctx.engines.runtime(case.runtime, case.device)
        return check(case, ctx)

    return run


def _pair(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None and case.other is not None
    a, art_a = ctx.results.generate(case.model, case.runtime, case.quant,
                                     case.prompt, case.device)
    b, _ = ctx.results.generate(case.model, case.runtime, case.other,
                                 case.prompt, case.device)
    cmp = compare(b.tokens, a.tokens)
    bound = bound_of(ctx, case, "pair_max_mismatches")
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
        rows=() if cmp.first is None else token_table(
            ctx, case, b.tokens, a.tokens, cmp.positions),
        artifact=f"{art_a.path} ({case.quant}, {case.other})",
        calls=(a.call, b.call),
    )


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    """The transformers reference at each GPU precision, per prompt; with two precisions
    also their pair and drift comparisons. Only where the ``transformers`` runtime is
    configured: the matrix holds the runtimes asked for, nothing else."""
    if RUNTIME not in settings.runtimes:
        return []
    precisions = list(settings.cuda_precisions)
    cases = [Case("cuda", model, RUNTIME, precision, p, device=DEVICE)
             for precision in precisions for p in prompts]
    if len(precisions) == 2:
        high, low = precisions
        cases += [Case("cuda", model, RUNTIME, high, p, other=low, variant=variant,
                       device=DEVICE)
                  for p in prompts for variant in ("pair", "drift")]
    return cases


SUITE = Suite(
    "cuda",
    "GPU precision ladder: bf16/fp16 against the float32 oracle and each other",
    on_cuda(token.run),
    checks={"pair": on_cuda(_pair), "drift": on_cuda(drift.run)},
    params={
        "max_mismatches": {"bfloat16": 3, "float16": 5, "*": 5},
        "pair_max_mismatches": 3,
        "slack": 0,  # drift(bf16) <= drift(fp16)
    },
    device=DEVICE,
    expand=_cases,
    weight=Weight(10, q_mismatches, "the GPU precision ladder, where it runs"),
    rank=60,
)
