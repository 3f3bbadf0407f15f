"""``groundtruth convert``: build every artifact of the configured matrix into the cache.

The original workflow's ``make convert``. The artifacts are those of the cases pytest
collects (:func:`~pytest_groundtruth.suites.matrix.build_cases`): each runtime's
conversion at each quantization a case uses, and for the roundtrip suite the GGUF
export and its reimport. Everything goes through the artifact cache, so an artifact
already there is verified (SHA-256) and kept, a missing or broken one is built (once,
under a lock), and a later ``pytest`` run converts nothing.

A model or runtime that is not available here is reported with the reason and skipped;
a conversion that fails is reported and the others still run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.models.sources import ModelUnavailable
from pytest_groundtruth.suites.matrix import build_cases

# The suite whose cases also need the GGUF export of the artifact and its reimport.
ROUNDTRIP_SUITE = "roundtrip"


@dataclass(frozen=True)
class Target:
    model: str
    runtime: str
    quant: str
    roundtrip: bool = False  # the export + reimport of the artifact, not the artifact

    def __str__(self) -> str:
        kind = " export+reimport" if self.roundtrip else ""
        return f"{self.model} {self.runtime} {self.quant}{kind}"


@dataclass(frozen=True)
class Outcome:
    target: Target
    status: str  # "ready" | "skipped" | "failed"
    detail: str  # the artifact's path, or why not


def targets(ctx: Context, prompts: Sequence[str]) -> list[Target]:
    """The artifacts the matrix's CPU cases use, in matrix order, each once."""
    found: dict[Target, None] = {}
    for case in build_cases(ctx.settings, prompts):
        if case.device != "cpu" or case.skip:
            continue
        for quant in (case.quant, case.other):
            if quant is not None:
                found.setdefault(Target(case.model, case.runtime, quant))
        if case.suite == ROUNDTRIP_SUITE:
            found.setdefault(Target(case.model, case.runtime, case.quant, roundtrip=True))
    return list(found)


def convert(ctx: Context) -> Iterator[Outcome]:
    """Build (or verify) each target's artifact; one outcome per target."""
    for target in targets(ctx, list(ctx.inputs.prompts)):
        try:
            if target.roundtrip:
                artifact = ctx.results.roundtrip(target.model, target.runtime, target.quant)
            else:
                artifact = ctx.engines.artifact(target.model, target.runtime, target.quant)
        except (ModelUnavailable, RuntimeUnavailable) as exc:
            yield Outcome(target, "skipped", str(exc))
            continue
        except Exception as exc:  # one broken conversion must not hide the others
            yield Outcome(target, "failed", f"{type(exc).__name__}: {exc}")
            continue
        yield Outcome(target, "ready", str(artifact.path))
