"""The test matrix: which (suite, model, runtime, quantization, prompt) cases exist.

Pure data from :class:`~pytest_groundtruth.config.settings.Settings` and the suite catalog; no
model is loaded, so ``pytest --collect-only`` shows the matrix instantly. A case the
runtime cannot run (a quantization it lacks, a capability a suite needs) is still listed,
with the reason it will skip, so the report shows the holes in the matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.runtimes.base import Capability
from pytest_groundtruth.runtimes.registry import runtime_class
from pytest_groundtruth.suites.catalog import CATALOG

# What each suite needs from a runtime (any one of each tuple).
NEEDS: dict[str, tuple[tuple[Capability, ...], ...]] = {
    "canary": ((Capability.GENERATE,),),
    "token": ((Capability.GENERATE,),),
    "drift": ((Capability.GENERATE,),),
    "roundtrip": ((Capability.EXPORT_GGUF,), (Capability.REIMPORT,)),
    "ppl": ((Capability.PERPLEXITY,),),
    "cuda": ((Capability.GENERATE,),),
    "topk": ((Capability.TOPK, Capability.SCORE),),
    "agreement": ((Capability.SCORE,),),
    "integrity": (),
}

# Pair suites compare the higher-precision quantization with the lower one.
PAIRS = (("int8", "int4"),)
CUDA_RUNTIME = "transformers"


@dataclass(frozen=True)
class Case:
    suite: str
    model: str
    runtime: str
    quant: str
    prompt: str | None = None
    other: str | None = None  # pair cases: the quantization compared with ``quant``
    variant: str = ""  # distinguishes several checks of one suite on one cell ("gap", ...)
    skip: str | None = None  # known at collection: why this case cannot run

    @property
    def id(self) -> str:
        parts = [self.model, self.runtime, self.variant, self.quant, self.other, self.prompt]
        return "-".join(p for p in parts if p)

    @property
    def quant_label(self) -> str:
        return f"{self.quant}-{self.other}" if self.other else self.quant

    @property
    def name(self) -> str:
        return f"{self.suite}[{self.id}]"

    @property
    def group(self) -> str:
        """Tests sharing a group run on one xdist worker (--dist loadgroup)."""
        return f"{self.model}-{self.runtime}"


def _capability_gap(suite: str, runtime: str) -> str | None:
    cls = runtime_class(runtime)
    for options in NEEDS.get(suite, ()):
        if not any(c in cls.capabilities for c in options):
            names = " or ".join(c.value for c in options)
            return f"runtime {runtime!r} has no {names} (suite {suite!r} needs it)"
    return None


def build_cases(settings: Settings, prompts: list[str]) -> list[Case]:
    """Every case of the configured matrix, grouped by model and runtime."""
    cases: list[Case] = []
    for model in settings.models:
        for runtime in settings.runtimes:
            cases.extend(_runtime_cases(settings, model, runtime, prompts))
        if "cuda" in settings.suites:
            cases.extend(_cuda_cases(settings, model, prompts))
    return cases


def _runtime_cases(settings: Settings, model: str, runtime: str, prompts: list[str]) -> list[Case]:
    cls = runtime_class(runtime)
    quants = [q for q in settings.quantizations if q in cls.quantizations]
    cases: list[Case] = []
    for quant in quants:
        for suite in settings.suites:
            info = CATALOG[suite]
            if info.scope not in ("prompt", "artifact"):
                continue
            if info.quantizations is not None and quant not in info.quantizations:
                continue
            skip = _capability_gap(suite, runtime)
            if info.per_prompt:
                cases.extend(Case(suite, model, runtime, quant, p, skip=skip) for p in prompts)
            else:
                cases.append(Case(suite, model, runtime, quant, skip=skip))
    for high, low in PAIRS:
        if high not in quants or low not in quants:
            continue
        if "drift" in settings.suites:
            skip = _capability_gap("drift", runtime)
            cases.extend(Case("drift", model, runtime, high, p, other=low, skip=skip)
                         for p in prompts)
        if "ppl" in settings.suites:
            skip = _capability_gap("ppl", runtime)
            cases.append(Case("ppl", model, runtime, high, other=low, variant="gap", skip=skip))
    return cases


def _cuda_cases(settings: Settings, model: str, prompts: list[str]) -> list[Case]:
    precisions = list(settings.cuda_precisions)
    cases = [
        Case("cuda", model, CUDA_RUNTIME, precision, p)
        for precision in precisions
        for p in prompts
    ]
    if len(precisions) == 2:
        high, low = precisions
        for p in prompts:
            for variant in ("pair", "drift"):
                cases.append(Case("cuda", model, CUDA_RUNTIME, high, p, other=low,
                                  variant=variant))
    return cases
