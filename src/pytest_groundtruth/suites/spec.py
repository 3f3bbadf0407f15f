"""A suite, declared once: :class:`Suite` (name, marker text, what it needs, bounds, runner).

Each suite module defines ``SUITE = Suite(...)`` and registers it by entry point (group
``pytest_groundtruth.suites``, name -> ``module:SUITE``); the built-in suites register the
same way, in this package's pyproject.toml. Everything the plugin needs is read from the
declaration: the marker, the test cases (:attr:`Suite.expand`), the skip when a runtime
lacks a capability, the device, the default bounds (which configuration may override),
and the function that runs one case; and what the tools around a run need to know of
it: its weight in the qualification score (:attr:`Suite.weight`), the engine work it adds
to a run's floor (:attr:`Suite.work`), whether it reads the artifact itself or judges
the engine (:attr:`Suite.box`) and whether ``groundtruth falsify`` runs it
(:attr:`Suite.falsify`). A suite from another package gets all of these from its own
declaration, with no edit in this package.

A bound's default is one number or a table keyed by quantization (``"*"`` for any
other). A calibrated suite declares its :class:`~pytest_groundtruth.framework.bounds.Calibration`
instead (its package file, its statistics, its rule): its bounds then resolve in the
suite framework (:func:`pytest_groundtruth.framework.bounds.resolve`), per model.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from pytest_groundtruth.core import plugins
from pytest_groundtruth.framework.bounds import Calibration, lookup, package_file
from pytest_groundtruth.ggufio.quants import precision
from pytest_groundtruth.runtimes.base import Capability
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.quality import VERDICT, Weight

if TYPE_CHECKING:
    from pytest_groundtruth.config.settings import Settings
    from pytest_groundtruth.context import Context
    from pytest_groundtruth.suites.result import SuiteResult

Number: TypeAlias = "int | float"
Default: TypeAlias = "int | float | dict[str, int | float] | None"
# Pair suites compare the higher-precision quantization with the lower one.
PAIRS = (("int8", "int4"),)


class Work(str, enum.Enum):
    """Engine work a suite needs per artifact it touches, which a run cannot avoid
    (``groundtruth bench`` measures each piece alone: the floor)."""

    GENERATE = "generate"  # one greedy generation per prompt
    PERPLEXITY = "perplexity"  # perplexity of the evaluation text
    SCORE = "score"  # teacher-forced scoring of each prompt's oracle tokens
    INTEGRITY = "integrity"  # the artifact's file against the source
    ROUNDTRIP = "roundtrip"  # export to GGUF, reimport, generate with the reimport


class Box(str, enum.Enum):
    """How a suite judges: from what the engine does (black) or by reading the artifact
    itself (white); ``groundtruth falsify`` reports their power apart."""

    BLACK = "black"
    WHITE = "white"


@dataclass(frozen=True)
class Cell:
    """One model on one configured runtime, as the matrix sees it (no engine loaded)."""

    model: str
    runtime: str
    quantizations: tuple[str, ...]  # the configured ones this runtime offers
    capabilities: frozenset[Capability]


Expand: TypeAlias = "Callable[[Suite, str, Sequence[Cell], Sequence[str], Settings], list[Case]]"
Check: TypeAlias = "Callable[[Case, Context], SuiteResult]"


@dataclass(frozen=True)
class Suite:
    name: str
    summary: str  # the marker's description
    run: Check  # the suite's check; a case naming one of ``checks`` runs that one instead
    # What the suite needs from a runtime: every tuple must be met by one of its members.
    needs: tuple[tuple[Capability, ...], ...] = ((Capability.GENERATE,),)
    per_prompt: bool = True
    # Whether its cases take chat prompts (prompts/chat/*.json); False: plain prompts only.
    chat: bool = True
    quantizations: tuple[str, ...] | None = None  # None: every configured one
    params: Mapping[str, Default] = field(default_factory=dict)
    device: str = "cpu"
    expand: Expand | None = None  # None: :func:`each_artifact`
    rank: int = 100  # where the suite comes in the default list and the reports (built-ins < 100)
    # Which way the measured value gets worse, for the baseline ratchet: "higher" or
    # "lower", or one per key when the measured value is a mapping.
    worse: str | Mapping[str, str] = "higher"
    # Calibrated bounds (their parameters are listed in ``params`` with the value None).
    calibration: Calibration | None = None
    # Its part of the qualification score (suites/quality.py): by default its verdict at
    # the default weight; None: it never counts (a gate, timings).
    weight: Weight | None = VERDICT
    # The engine work it needs per artifact, for the floor of a run (None: the floor runs
    # its cases whole, after the pieces every other suite needs).
    work: frozenset[Work] | None = None
    box: Box = Box.BLACK
    # Whether `groundtruth falsify` runs it on correct and broken files (False: it judges
    # a derived model, a draft or an adapter, that the fault harness does not make).
    falsify: bool = True
    # Separate checks on one cell, each a parameter of its cases: a case whose ``variant``
    # names one runs it (lora's merge, changes and hot; ppl's gap; cuda's pair and drift),
    # so reports and tools can list them and no ``run`` dispatches on strings.
    checks: Mapping[str, Check] = field(default_factory=dict)

    def judge(self, case: Case, ctx: Context) -> SuiteResult:
        """Run ``case``: the declared check its ``variant`` names, else :attr:`run`."""
        return self.checks.get(case.variant, self.run)(case, ctx)

    def cases(self, model: str, cells: Sequence[Cell], prompts: Sequence[str],
              settings: Settings) -> list[Case]:
        """This suite's test cases for ``model`` on the configured runtimes."""
        return (self.expand or each_artifact)(self, model, cells, prompts, settings)

    def gap(self, cell: Cell) -> str | None:
        """Why ``cell``'s runtime cannot run this suite, or None."""
        for options in self.needs:
            if not any(c in cell.capabilities for c in options):
                names = " or ".join(c.value for c in options)
                return f"runtime {cell.runtime!r} has no {names} (suite {self.name!r} needs it)"
        return None

    def default(self, param: str, quantization: str | None,
                runtime: str | None = None) -> int | float | None:
        """The declared default: per quantization where ``params`` maps them, the entry
        ``"<runtime>:<quantization>"`` first (one runtime's scheme at that name, e.g.
        llama.cpp's Q4_0 at int4), then ``"<quantization>"``, then ``"*"``; a calibrated
        parameter: the package default (the model at hand may have its own: the suite
        framework resolves a case's bound)."""
        if self.calibration is not None and param in self.calibration.params:
            return lookup(package_file(self.calibration.file).bounds, param, quantization,
                          runtime)
        value = self.params[param]
        if isinstance(value, dict):
            q = quantization or "*"
            if runtime is not None and f"{runtime}:{q}" in value:
                return value[f"{runtime}:{q}"]
            return value.get(q, value.get("*"))
        return value


def each_artifact(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
                  settings: Settings) -> list[Case]:
    """One case per model x runtime x quantization (x prompt when ``per_prompt``)."""
    cases = []
    for cell in cells:
        skip = suite.gap(cell)
        for quant in cell.quantizations:
            # a suite's project name stands for its GGUF type too (canary at int8 also runs
            # on a q8_0 file); a GGUF type does not pull in the project name (roundtrip's
            # q8_0 of the K-quant runs adds no int8 case)
            if suite.quantizations is not None and quant not in {
                    *suite.quantizations, *(precision(q) for q in suite.quantizations)}:
                continue
            base = Case(suite.name, model, cell.runtime, quant, skip=skip, device=suite.device)
            cases.extend(_per_prompt(suite, base, prompts))
    return cases


def each_pair(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
              settings: Settings, variant: str = "") -> list[Case]:
    """One case per model x runtime x (high, low) pair of :data:`PAIRS` both configured."""
    cases = []
    for cell in cells:
        for high, low in PAIRS:
            if high in cell.quantizations and low in cell.quantizations:
                base = Case(suite.name, model, cell.runtime, high, other=low, variant=variant,
                            skip=suite.gap(cell), device=suite.device)
                cases.extend(_per_prompt(suite, base, prompts))
    return cases


def _per_prompt(suite: Suite, base: Case, prompts: Sequence[str]) -> list[Case]:
    if not suite.per_prompt:
        return [base]
    return [Case(base.suite, base.model, base.runtime, base.quant, p, base.other, base.variant,
                 base.skip, base.device) for p in prompts]


# --------------------------------------------------------------------------- registry


def suite_names() -> tuple[str, ...]:
    """Every registered suite (entry points), built-in and third-party, by rank."""
    return plugins.ranked(plugins.SUITES)


def get_suite(name: str) -> Suite:
    found = plugins.load(plugins.SUITES, name)
    if not isinstance(found, Suite) or found.name != name:
        raise plugins.PluginError(f"entry point {name!r} of group {plugins.SUITES!r} is "
                                  f"{found!r}, not a Suite named {name!r}")
    return found
