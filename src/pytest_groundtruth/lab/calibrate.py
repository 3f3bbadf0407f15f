"""``groundtruth calibrate``: derive the agreement and ppl suites' default bounds.

Every quantization the project names is calibrated: the original workflow's (float32,
float16, bfloat16, int8, int4) and every type of llama.cpp's quantizer (q8_0, q6_k,
q5_k_m, q4_k_m, ..., :data:`~pytest_groundtruth.ggufio.quants.CATALOG`), each on its own
correct conversions.

The rule, per quantization q (written to docs/calibration.md with the numbers):

* measured: teacher-forced top-1 agreement t and mean KL k of every *correct* conversion
  the project runs at q on the embedded model (llama.cpp, torchao, transformers);
* published: llama.cpp's figures for Llama-3-8B on wikitext-2 (llama-perplexity
  --kl-divergence, in llama.cpp's tools/perplexity README), where one
  exists for q;
* ``max_kl = max over conversions of (max(k, published) + 3 * se)``, se the standard
  error of that conversion's mean KL (the sd of its per-position KL over sqrt(n)), at
  least :data:`KL_FLOOR` (the noise of oracle log-probabilities stored to 6 decimals):
  three standard errors above the worst correct conversion, as for top-1 (on the
  evaluation text, whose reference log-probabilities are not rounded, at least
  :data:`TEXT_KL_FLOOR`);
* ``min_top1 = min(t) - 3 * sqrt(t (1 - t) / n)``, n the number of teacher-forced
  positions: three binomial standard errors below the worst correct conversion, so a
  correct engine on another machine passes; when every correct conversion agrees
  everywhere (t = 1), one position of slack: ``1 - 1/n``;
* ``max_ratio = 1 + max(3 * (max(r) - 1), RATIO_FLOOR)`` for the ppl suite, r = ppl of the
  conversion / ppl of the float32 oracle on the evaluation text: three times the worst
  correct conversion's excess, at least :data:`RATIO_FLOOR` (0.2 %: float32 noise
  between machines and engines stays two orders of magnitude below it).

Random-weight models (the tiny ``tiny:`` models) get bounds of their own, by the same rule
over the correct conversions of every tiny model (``--random-model``; no published
figures apply): their next-token distributions are nearly flat (perplexity above the
vocabulary size), so a legitimate quantization flips the top-1 token at a third to
two thirds of the positions while the KL divergence stays small; on them KL carries the
check. Where several runtimes are calibrated at one quantization name (int8, int4:
llama.cpp's Q8_0/Q4_0 and torchao's schemes), each also gets bounds of its own
(``llamacpp:int4``), from its own conversions, and the name's bounds are the loosest
(for runtimes not calibrated here). Quantizations without bounds of their own get
``int4``'s (``*``). Bounds are rounded
outward (top-1 down, KL and ratio up) to two significant digits (of the ratio's excess).
The results are written to ``pytest_groundtruth/data/agreement_bounds.json`` and
``ppl_bounds.json``, which the suites read, so the defaults are this command's output,
never typed by hand.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import EngineFailure, RuntimeUnavailable
from pytest_groundtruth.framework.bounds import package_document
from pytest_groundtruth.framework.rules import (
    KL_FLOOR,
    PUBLISHED,
    RATIO_FLOOR,
    STANDARD_ERRORS,
    TEXT_KL_FLOOR,
    Measured,
    derive,
)
from pytest_groundtruth.ggufio.quants import CATALOG
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.suites.agreement import Agreement, measure, measure_text
from pytest_groundtruth.suites.case import Case

CORRECT = {  # the correct conversions measured per quantization
    "float32": (("llamacpp", "float32"), ("transformers", "float32")),
    "float16": (("llamacpp", "float16"), ("transformers", "float16")),
    "bfloat16": (("transformers", "bfloat16"),),
    "int8": (("llamacpp", "int8"), ("torchao", "int8")),
    "int4": (("llamacpp", "int4"), ("torchao", "int4")),
    **{name: (("llamacpp", name),) for name in CATALOG},  # llama.cpp's quantizer
}
CATCH_ALL = "int4"  # quantizations without their own bounds (q4_1, ...) get int4's


class _Row(Protocol):
    @property
    def runtime(self) -> str: ...

    @property
    def quant(self) -> str: ...


R = TypeVar("R", bound=_Row)


def per_runtime(measured: Sequence[R], derive: Callable[[list[R], str], dict[str, float]]
                ) -> dict[str, dict[str, float]]:
    """``"<runtime>:<quant>"`` bounds where several runtimes were measured at one quantization
    name (each runtime's own scheme there: llama.cpp's Q4_0 and torchao's int4 are not one
    scheme); the name's own bounds stay the loosest, for runtimes not calibrated here."""
    out = {}
    for q in dict.fromkeys(m.quant for m in measured):
        runtimes = sorted({m.runtime for m in measured if m.quant == q})
        if len(runtimes) > 1:
            for r in runtimes:
                out[f"{r}:{q}"] = derive([m for m in measured if m.runtime == r], q)
    return out


def measure_correct(ctx: Context, model: str, findings: list[str] | None = None
                    ) -> list[Measured]:
    """The measures of every correct conversion available here. A runtime that fails on
    its conversion (NaN logits, a crash) is a finding, appended to ``findings``, and the
    calibration goes on without it."""
    out = []
    for quant, cells in CORRECT.items():
        for runtime, q in cells:
            if q not in make_runtime(runtime, ctx.settings).quantizations:
                continue
            try:
                case = Case("agreement", model, runtime, q)
                result = measure(case, ctx)
                text = measure_text(case, ctx)
                ppl = ctx.results.perplexity(model, runtime, q)[0].perplexity
            except RuntimeUnavailable:
                continue
            except EngineFailure as exc:
                if findings is not None:
                    findings.append(engine_finding(model, runtime, q, exc))
                continue
            out.append(Measured(model, runtime, quant, result.top1, result.kl,
                                len(result.pooled), ppl / oracle_ppl(ctx, model),
                                _kl_se(result), Measured(model, runtime, quant, text.top1,
                                                         text.kl, len(text.pooled), None,
                                                         _kl_se(text))))
    return out


def engine_finding(model: str, runtime: str, quant: str, exc: EngineFailure) -> str:
    """One line for a correct conversion that the runtime failed on: left out of the
    calibration, reported with the report."""
    return (f"{model} / {runtime} / {quant}: the runtime failed: {str(exc).splitlines()[0]}"
            + (f" (call: {exc.call})" if exc.call else "") + "; left out of the bounds")


def _kl_se(measured: Agreement) -> float:
    kls = [p.kl for p in measured.pooled]
    return statistics.stdev(kls) / math.sqrt(len(kls)) if len(kls) > 1 else 0.0


def oracle_ppl(ctx: Context, model: str) -> float:
    return float(ctx.inputs.oracle_perplexity(model)["perplexity"])


@dataclass(frozen=True)
class Calibration:
    model: str
    bounds: dict[str, dict[str, float]]  # per quantization, for real models
    random_models: tuple[str, ...]
    random_bounds: dict[str, dict[str, float]]  # per quantization, random-weight models


def _bounds(measured: list[Measured], published: bool) -> dict[str, dict[str, float]]:
    bounds = {q: derive(measured, q, published) for q in CORRECT
              if any(m.quant == q for m in measured)}
    bounds.update(per_runtime(measured, lambda rows, q: derive(rows, q, published)))
    if CATCH_ALL in bounds:
        bounds["*"] = bounds[CATCH_ALL]
    return bounds


def _measured_table(measured: list[Measured]) -> list[str]:
    lines = ["| model | quantization | correct conversion | top-1 | KL | KL se | positions | "
             "ppl ratio | text: top-1 | KL | KL se | positions |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def text(m: Measured | None) -> str:
        return "- | - | - | -" if m is None else \
            f"{m.top1:.3f} | {m.kl:.5f} | {m.kl_se:.5f} | {m.positions}"

    return lines + [f"| {m.model} | {m.quant} | {m.runtime} | {m.top1:.3f} | {m.kl:.5f} | "
                    f"{m.kl_se:.5f} | {m.positions} | "
                    f"{'-' if m.ratio is None else f'{m.ratio:.4f}'} | {text(m.text)} |"
                    for m in measured]


def _bounds_table(bounds: dict[str, dict[str, float]], published: bool) -> list[str]:
    lines = ["| quantization | published (llama.cpp, Llama-3-8B) | min_top1 | max_kl | "
             "max_ratio | text: min_top1 | text: max_kl |", "|---|---|---|---|---|---|---|"]
    for q, b in bounds.items():
        source = (PUBLISHED.get(q, {}).get("source", "-") if published else "-") if q != "*" \
            else f"any other quantization: {CATCH_ALL}'s bounds"
        lines.append(f"| {q} | {source} | {b['min_top1']} | {b['max_kl']} | "
                     f"{b.get('max_ratio', '-')} | {b.get('text_min_top1', '-')} | "
                     f"{b.get('text_max_kl', '-')} |")
    return lines


def calibrate(ctx: Context, model: str, random_models: tuple[str, ...] = ()
              ) -> tuple[Calibration, str]:
    findings: list[str] = []
    measured = measure_correct(ctx, model, findings)
    random = [m for slug in random_models for m in measure_correct(ctx, slug, findings)]
    result = Calibration(model, _bounds(measured, True), random_models,
                         _bounds(random, False) if random else {})
    rule = (__doc__.split("The rule,")[1].split("Quantizations without")[0].strip()
            if __doc__ else "")
    lines = [
        "<!-- generated by `groundtruth calibrate`; do not edit by hand -->",
        "",
        f"Model: {model} (oracle perplexity {oracle_ppl(ctx, model):.4f}). Rule: {rule}",
        "",
        *_measured_table(measured),
        "",
        *_bounds_table(result.bounds, True),
    ]
    if findings:
        lines += ["", "## Findings", "", "Correct conversions a runtime failed on (not "
                  "calibrated; each is a runtime defect to report):", "",
                  *(f"- {f}" for f in findings)]
    if random:
        lines += ["", "## Random-weight models", "",
                  f"Models: {', '.join(random_models)} (oracle perplexities "
                  + ", ".join(f"{oracle_ppl(ctx, s):.0f}" for s in random_models)
                  + "; vocabulary 49152). The bounds the agreement and ppl suites apply to "
                  "`tiny:` models, by the same rule over all of them:", "",
                  *_measured_table(random), "", *_bounds_table(result.random_bounds, False)]
    return result, "\n".join(lines) + "\n"


def bounds_document(cal: Calibration) -> str:
    """data/agreement_bounds.json: min_top1 and max_kl per quantization (text_*: on the
    evaluation text)."""
    keys = ("min_top1", "max_kl", "text_min_top1", "text_max_kl")

    def agreement(bounds: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {q: {k: v for k, v in b.items() if k in keys} for q, b in bounds.items()}

    return package_document(cal.model, agreement(cal.bounds), cal.random_models,
                            agreement(cal.random_bounds))


def ppl_document(cal: Calibration) -> str:
    """data/ppl_bounds.json: max_ratio (ppl / the oracle's ppl) per quantization."""
    def ratios(bounds: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {q: {"max_ratio": b["max_ratio"]} for q, b in bounds.items() if "max_ratio" in b}

    return package_document(cal.model, ratios(cal.bounds), cal.random_models,
                            ratios(cal.random_bounds))


__all__ = ["KL_FLOOR", "PUBLISHED", "RATIO_FLOOR", "STANDARD_ERRORS", "TEXT_KL_FLOOR",
           "Calibration", "Measured", "bounds_document", "calibrate", "derive",
           "measure_correct", "ppl_document"]
