"""``groundtruth calibrate``, rescoring section: the rescore suite's bounds from correct files.

Measured: every correct conversion the project runs on the model, for every quantization
each calibration runtime offers (:data:`RUNTIMES`; a quantization type added to a
runtime gets its own bounds from the same command), on every prompt: the rescore
suite's per-prompt largest gap (:mod:`pytest_groundtruth.measures.rescore`) and its
pooled excess NLL. Per quantization q:

* ``max_gap = max(NEAR_TIE_MARGIN, 2 * g)``, g the largest gap of any correct conversion
  at q on any prompt. Gaps are log-likelihood ratios with a roughly exponential tail
  (P(gap > x) = exp(-x / b)); g, the largest of N calibration positions, is then about
  b ln N, and a correct position exceeds 2 g with probability about 1 / N^2: with N in
  the hundreds, a 32-position test about once in ten thousand runs. The floor is the
  oracle's near-tie margin, the gap of a flip any correct engine may make;
* ``max_excess_nll = max(0, e) + 3 * se``, e the largest pooled excess NLL of a correct
  conversion at q, se the standard error of a pooled mean-NLL difference: the sd of the
  oracle's per-token NLL times sqrt(1/n + 1/n) (n its tokens). Three standard errors
  above the worst correct conversion, the agreement suite's rule.

The consistency suite's ``max_gap`` comes from the same generations, each scored by the
runtime itself (:mod:`pytest_groundtruth.suites.consistency`): ``max(NEAR_TIE_MARGIN,
2 * s)``. A correct engine flips only at near ties, by the difference between its decode
and prefill paths; that difference comes from the engine's kernels for quantized weights
(llama.cpp's quantized matrix products differ between one row and a batch), not from one
type's rounding, and its largest flip over a few prompts is a noisy estimate. So for a
lossy quantization s is the largest gap of any generated token to its own scoring's best
over *every* lossy quantization the runtime was calibrated at (pooled), and for float32,
float16 and bfloat16 the largest at that quantization; twice it leaves room for a flip
not seen.

Bounds are rounded up to two significant digits. ``*`` (a quantization no correct
conversion was measured at) gets the loosest bound of each kind: no false alarm, and
little power, until the type is calibrated. The bounds go to
``pytest_groundtruth/data/rescore_bounds.json``, which the suite reads.
"""

from __future__ import annotations

import math

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import EngineFailure, RuntimeUnavailable
from pytest_groundtruth.framework.bounds import package_document
from pytest_groundtruth.framework.rules import (
    RescoreMeasured,
    derive_consistency,
    derive_rescore,
)
from pytest_groundtruth.lab.calibrate import engine_finding, per_runtime
from pytest_groundtruth.measures.consistency import check
from pytest_groundtruth.measures.rescore import judge, mean_nll
from pytest_groundtruth.runtimes.base import Capability
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.suites.consistency import self_scored
from pytest_groundtruth.suites.rescore import oracle_logprobs, oracle_nll_se, pooled, rescored

RUNTIMES = ("llamacpp", "torchao", "transformers")


def measure_correct(ctx: Context, model: str, runtimes: tuple[str, ...] = RUNTIMES,
                    findings: list[str] | None = None) -> list[RescoreMeasured]:
    """The rescore measures of every correct conversion available here; a runtime that
    fails on one (NaN logits, a crash) is a finding in ``findings`` and is left out."""
    out = []
    for name in runtimes:
        runtime = make_runtime(name, ctx.settings)
        for quant in runtime.quantizations:
            try:
                ctx.engines.runtime(name)
                gaps, own = {}, []
                for prompt in ctx.prompts_for(name):
                    oracle = ctx.inputs.oracle(model, prompt)
                    gen, artifact = ctx.results.generate(model, name, quant, prompt)
                    verdict = judge(rescored(ctx, model, oracle, gen.tokens).ratings,
                                    oracle_logprobs(oracle), math.inf, math.inf)
                    gaps[prompt] = verdict.max_gap
                    if Capability.SCORE in runtime.capabilities:
                        scored = self_scored(ctx, artifact, gen,
                                             tuple(oracle.eos_token_ids or ()))
                        own.append(check(scored.ratings, math.inf).max_gap)
                pool = pooled(ctx, model, name, quant)
            except RuntimeUnavailable:
                continue
            except EngineFailure as exc:
                if findings is not None:
                    findings.append(engine_finding(model, name, quant, exc))
                continue
            worst = max(gaps, key=lambda p: gaps[p])
            out.append(RescoreMeasured(name, quant, gaps[worst], worst, pool.excess_nll,
                                       pool.tokens, max(own) if own else None))
    return out


def derive(measured: list[RescoreMeasured], quant: str, se: float) -> dict[str, float]:
    return derive_rescore(measured, quant, se)


Bounds = dict[str, dict[str, float]]


def calibrate(ctx: Context, model: str) -> tuple[Bounds, Bounds, str]:
    """The rescore and consistency bounds per quantization, and the markdown section
    that shows how."""
    findings: list[str] = []
    measured = measure_correct(ctx, model, findings=findings)
    se, n = oracle_nll_se(ctx, model)
    quants = list(dict.fromkeys(m.quant for m in measured))
    bounds = {q: derive(measured, q, se) for q in quants}
    bounds["*"] = {k: max(b[k] for b in bounds.values()) for k in ("max_gap", "max_excess_nll")}
    bounds.update(per_runtime(measured, lambda rows, q: derive(rows, q, se)))
    own = [m for m in measured if m.self_gap is not None]
    consistency = {q: derive_consistency(own, q)
                   for q in dict.fromkeys(m.quant for m in own)}
    if consistency:
        consistency["*"] = {"max_gap": max(b["max_gap"] for b in consistency.values())}
    consistency.update(per_runtime(own, derive_consistency))
    doc = (__doc__ or "").split("Per quantization q:")[1].split("The bounds go to")[0].strip()
    oracle_lp = [lp for p in ctx.inputs.prompts
                 for lp in oracle_logprobs(ctx.inputs.oracle(model, p))]
    lines = [
        "## The rescore suite's bounds",
        "",
        f"Model: {model}; {len(ctx.inputs.prompts)} prompts. Measured: the rescore suite's "
        "per-prompt largest gap and its pooled excess NLL on every correct conversion. "
        "Per quantization q:",
        "",
        doc,
        "",
        f"The oracle's own continuations: {n} tokens, mean NLL {mean_nll(oracle_lp):.3f} "
        f"nats; se = {se:.4f}.",
        "",
        "| quantization | correct conversion | largest gap (prompt) | pooled excess NLL | tokens "
        "| consistency: largest gap to its own scoring |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {m.quant} | {m.runtime} | {m.max_gap:.3f} ({m.worst_prompt}) | "
              f"{m.excess_nll:+.4f} | {m.tokens} | "
              f"{'-' if m.self_gap is None else f'{m.self_gap:.4f}'} |" for m in measured]
    lines += ["", "| quantization | max_gap | max_excess_nll | consistency max_gap |",
              "|---|---|---|---|"]
    lines += [f"| {q} | {b['max_gap']} | {b['max_excess_nll']} | "
              f"{consistency.get(q, {}).get('max_gap', '-')} |" for q, b in bounds.items()]
    if findings:
        lines += ["", "Findings: correct conversions a runtime failed on (not calibrated):", "",
                  *(f"- {f}" for f in findings)]
    return bounds, consistency, "\n".join(lines) + "\n"


def bounds_document(model: str, bounds: dict[str, dict[str, float]]) -> str:
    return package_document(model, bounds)


__all__ = ["RescoreMeasured", "bounds_document", "calibrate", "derive", "derive_consistency",
           "measure_correct"]
