"""paired: the artifact against a correct conversion of the same types, position by position.

Agreement asks whether an artifact is as close to the float32 reference as correct
conversions *of the calibration model* were; at 4 bits that bound is wide, and a bug
that costs less than quantization noise hides under it. This suite removes the noise:
the artifact and its reference conversion (:mod:`pytest_groundtruth.framework.reference`:
llama.cpp's converter and quantizer, with the artifact's own tensor types where its file
is readable) are scored by the same runtime on the same positions (every oracle prompt
followed by the oracle's tokens, and the evaluation text), and compared position by
position (:mod:`pytest_groundtruth.measures.paired`): the mean excess KL divergence from
the float32 reference, with a one-sided 99 % confidence interval over blocks (a prompt,
or 16 positions of the text). It fails when the whole interval lies above the margin:
``margin`` x the correct conversion's own mean KL, at least ``floor`` nats. The failure
says by how much the artifact is worse than a correct conversion of the same types.

The per-position KL values are the agreement suite's measurements (one result each, in
the result store); the excess NLL of the evaluation text's tokens is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pytest_groundtruth.config.settings import ConfigError, Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.core.plugins import PluginError
from pytest_groundtruth.framework import reference
from pytest_groundtruth.measures.paired import BLOCK, CONFIDENCE, Interval, judge
from pytest_groundtruth.runtimes.base import Artifact, Capability
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.suites.agreement import (
    Agreement,
    measure_of,
    reference_text,
    text_of,
)
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult, bound_of
from pytest_groundtruth.suites.spec import Cell, Suite, each_artifact


def correct_conversion(ctx: Context, case: Case) -> tuple[Artifact, reference.Reference]:
    """The artifact under test and the correct conversion it is paired with (the
    type-matched reference where its types differ from llama.cpp's recipe)."""
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant)
    engine = ctx.engines.runtime(case.runtime)
    if engine.artifact_suffix(case.quant) != ".gguf":
        raise RuntimeUnavailable(f"runtime {case.runtime!r} does not run GGUF files, which "
                                 "the reference conversions are")
    if reference.recipe(case.quant) is None:
        raise RuntimeUnavailable(f"llama.cpp has no recipe for {case.quant!r}: no correct "
                                 "conversion of the same types to pair with")
    why = reference.unavailable(ctx)
    if why:
        raise RuntimeUnavailable(why)
    refs = reference.references(ctx, case.model, case.runtime, case.quant,
                                reference.tensor_types(artifact.path))
    return artifact, refs[-1]


def text_nll(ctx: Context, artifact: Artifact) -> list[float]:
    """The artifact's NLL of each token of the evaluation text (after the first), as the
    float32 reference tokenized it (made once)."""
    ref = reference_text(ctx, artifact.model)

    def make() -> dict[str, Any]:
        ids = list(ref.ids)
        rows = np.asarray(ctx.engines.runner(artifact).score(ids, 1), dtype=np.float64)
        return {"nll": [float(-rows[i][ids[i + 1]]) for i in range(len(ids) - 1)]}

    return ctx.results.cached("text-nll", artifact, list(ref.ids), make,
                              lambda data: [float(v) for v in data["nll"]])


def _kl(prompts: Agreement, text: Agreement) -> dict[str, list[float]]:
    found = {n: [p.kl for p in ps] for n, ps in prompts.positions.items()}
    found.update({n: [p.kl for p in ps] for n, ps in text.positions.items()})
    return found


def _show(iv: Interval) -> str:
    return f"{iv.mean:+.4g} nats [{iv.low:+.3g}, {iv.high:+.3g}]"


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    """A case per artifact of a runtime that runs GGUF files (the reference conversions
    are GGUF files, run by the artifact's own runtime), at a quantization llama.cpp has a
    recipe for; other cells have nothing to pair with and get no case."""
    def pairable(cell: Cell, quant: str) -> bool:
        try:
            runtime = make_runtime(cell.runtime, settings)
        except (ConfigError, PluginError):  # the matrix reports a runtime it cannot make
            return False
        return runtime.artifact_suffix(quant) == ".gguf" and reference.recipe(quant) is not None

    return [c for c in each_artifact(suite, model, cells, prompts, settings)
            if pairable(next(cell for cell in cells if cell.runtime == c.runtime), c.quant)]


def run(case: Case, ctx: Context) -> SuiteResult:
    artifact, ref = correct_conversion(ctx, case)
    text_name = ctx.inputs.eval_text[0].name
    mine = _kl(measure_of(ctx, artifact), text_of(ctx, artifact))
    theirs = _kl(measure_of(ctx, ref.artifact), text_of(ctx, ref.artifact))
    margin = bound_of(ctx, case, "margin")
    floor = bound_of(ctx, case, "floor")
    verdict = judge(mine, theirs, float(margin.value), float(floor.value), split=(text_name,),
                    artifact_nll={text_name: text_nll(ctx, artifact)},
                    reference_nll={text_name: text_nll(ctx, ref.artifact)})
    kl = verdict.kl
    relative = (f" ({100 * verdict.relative:+.0f} % of its mean KL "
                f"{verdict.reference_kl:.4g})" if verdict.reference_kl > 0 else "")
    summary = (f"worse than a correct conversion of the same types by {_show(kl)} mean KL "
               f"per position{relative}, {int(100 * CONFIDENCE)} % interval over "
               f"{kl.blocks} blocks of {kl.positions} positions: "
               + (f"lower bound {kl.low:.3g} > margin {verdict.margin:.3g}" if not verdict.passed
                  else f"lower bound {kl.low:.3g} <= margin {verdict.margin:.3g}"))
    notes = [f"paired with: {ref.label}"]
    if verdict.nll is not None:
        notes.append(f"excess NLL of {text_name}'s tokens: {_show(verdict.nll)} per token")
    return SuiteResult(
        case=case,
        passed=verdict.passed,
        summary=summary,
        measured={"excess_kl": kl.mean, "low": kl.low},
        bound={"margin": margin.value, "floor": floor.value},
        bound_origin=f"margin: {margin.origin}; floor: {floor.origin}",
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(f"reference conversion: {ref.artifact.recipe}",),
        notes=tuple(notes),
        details={"excess_kl": kl.mean, "excess_kl_low": kl.low, "excess_kl_high": kl.high,
                 "reference_kl": verdict.reference_kl, "margin_nats": verdict.margin,
                 "blocks": kl.blocks, "positions": kl.positions, "block": BLOCK,
                 "excess_nll": None if verdict.nll is None else verdict.nll.mean,
                 "reference": ref.label, "reference_path": str(ref.artifact.path)},
    )


SUITE = Suite(
    "paired",
    "the artifact against a correct conversion of the same types by llama.cpp's tools, "
    "position by position: excess KL with a confidence interval, within a margin",
    run,
    needs=((Capability.SCORE,),),
    per_prompt=False,
    # margin: the excess allowed, as a fraction of the correct conversion's own mean KL;
    # floor: at least this many nats (float noise at float32)
    params={"margin": 0.25, "floor": 1e-4},
    expand=_cases,
    rank=82,
    worse={"excess_kl": "higher", "low": "higher"},
)
