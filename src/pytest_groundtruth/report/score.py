"""The qualification score: 0-1000 per model x runtime x quantization, and its grade.

Read from the run's records only (the measured values each suite reported), so the
terminal, the HTML report, the JSON results and ``--gt-min-grade`` agree. The formula
and the reason for every weight are in docs/qualification.md; in short:

* a failed gateway (G1-G4) scores 0, whatever else passed;
* otherwise every test of the combination gets a quality ``q`` in [0, 1] from its
  measured value: 1 at a perfect measurement, 0.8 exactly at the test's bound (so a
  combination that just meets every bound scores 800, a B), falling linearly to 0 at
  :data:`BEYOND` times the bound (or at the worst value the measure can take);
* a suite's quality is the mean over its tests; the score is the weighted mean of the
  suites that ran, times 1000, rounded. A test that crashed or timed out counts 0; a
  skipped one does not count;
* only trusted verdicts count: a suite that raised a false alarm on a correct file at the
  test's precision in the falsification runs (:mod:`~.trust`, ``data/trust.json``)
  *informs* there (its verdict is shown) but does not lower the score.

Each suite declares its weight and quality function on its declaration
(:attr:`Suite.weight <pytest_groundtruth.suites.spec.Suite.weight>`, functions in
:mod:`pytest_groundtruth.suites.quality`); one that declares none counts by its verdict at
the default weight, and ``weight=None`` never counts (``perf``: timings are not part of
the score; the gateway: a gate, not a weight). Pair tests (drift, the perplexity gap)
compare two quantizations and belong to neither combination.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pytest_groundtruth.config.qualification import grade_floor, grade_of
from pytest_groundtruth.core.plugins import PluginError
from pytest_groundtruth.report import trust as trust_facts
from pytest_groundtruth.report.outcomes import Outcome, Verdict
from pytest_groundtruth.report.records import ParityRecord
from pytest_groundtruth.suites.quality import AT_BOUND, DEFAULT_WEIGHT, VERDICT, Weight, headroom
from pytest_groundtruth.suites.spec import get_suite, suite_names

__all__ = [
    "AT_BOUND",
    "GATEWAY",
    "Part",
    "Qualification",
    "below_minimum",
    "declared",
    "default_trust",
    "headroom",
    "informs_only",
    "qualify",
    "quality",
    "required_grade",
    "suite_quality",
    "weight_of",
    "weights",
]

GATEWAY = "gateway"

Key = tuple[str, str, str]  # model, runtime, quantization


def declared(suite: str) -> Weight | None:
    """``suite``'s declared weight (None: it never counts); a suite not registered in this
    environment (a results file from another one) counts by its verdict."""
    try:
        return get_suite(suite).weight
    except PluginError:
        return VERDICT


def weights() -> dict[str, Weight]:
    """The weights the suites declare (not the verdict default), by rank: the table
    docs/qualification.md prints."""
    found = {name: declared(name) for name in suite_names()}
    return {name: w for name, w in found.items() if w is not None and w is not VERDICT}


@functools.cache
def default_trust() -> trust_facts.Trust:
    return trust_facts.load()


def informs_only(record: ParityRecord, trust: trust_facts.Trust | None = None) -> bool:
    """The test's suite raised false alarms at its precision: shown, never scored."""
    case = record.case
    return (trust or default_trust()).informs_only(case.suite, case.quant, case.other)


def quality(record: ParityRecord, trust: trust_facts.Trust | None = None) -> float | None:
    """A test's quality in [0, 1]; None when it does not count (skipped, not scored, or
    a verdict the falsification runs do not trust at this precision)."""
    weight = declared(record.case.suite)
    if weight is None or record.verdict is None:
        return None
    if informs_only(record, trust):
        return None
    if record.result is None:
        return 0.0  # crashed or timed out before a verdict
    return max(0.0, min(1.0, weight.quality(record.result)))


def weight_of(suite: str) -> float:
    found = declared(suite)
    return found.weight if found is not None else DEFAULT_WEIGHT


@dataclass(frozen=True)
class Part:
    suite: str
    weight: float
    quality: float  # mean over the suite's tests of this combination
    tests: int


@dataclass(frozen=True)
class Qualification:
    model: str
    runtime: str
    quant: str
    score: int | None  # None: not scored (see ``gateway``)
    gateway: str  # "passed", "failed: <why>", "skipped: <why>" or "not run"
    parts: tuple[Part, ...]
    informs: tuple[str, ...] = ()  # suites shown but not scored here (false alarms)

    @property
    def grade(self) -> str:
        return grade_of(self.score) if self.score is not None else ""

    @property
    def label(self) -> str:
        """``912 A``, ``0 F (gateway)``, or why there is no score: ``n/a (no gateway)``,
        ``n/a (skipped)``."""
        if self.score is None:
            if self.gateway.startswith("skipped"):
                return "n/a (skipped)"
            return "n/a (no gateway)" if self.gateway == "not run" else "n/a"
        return f"{self.score} {self.grade}" + (" (gateway)" if self.gateway != "passed" else "")

    def below(self, grade: str) -> bool:
        return self.score is not None and self.score < grade_floor(grade)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "runtime": self.runtime, "quantization": self.quant,
                "score": self.score, "grade": self.grade or None, "gateway": self.gateway,
                "parts": [asdict(p) for p in self.parts], "informs": list(self.informs)}


def _gateway(records: list[ParityRecord]) -> str:
    gates = [r for r in records if r.case.suite == GATEWAY]
    if not gates:
        return "not run"
    if all(r.outcome is Outcome.SKIPPED and r.verdict is None for r in gates):
        return f"skipped: {gates[0].reason}"
    failed = [r for r in gates if r.verdict not in (None, Verdict.CORROBORATED)]
    if failed:
        r = failed[0]
        return f"failed: {r.result.summary if r.result is not None else r.reason}"
    return "passed"


def qualify(records: Iterable[ParityRecord], trust: trust_facts.Trust | None = None
            ) -> list[Qualification]:
    """A qualification per model x runtime x quantization that has single-artifact tests,
    in the records' order; ``trust``: the falsification's facts (default: the package's)."""
    groups: dict[Key, list[ParityRecord]] = defaultdict(list)
    for record in records:
        if record.case.other is None:
            groups[(record.case.model, record.case.runtime, record.case.quant)].append(record)
    out = []
    for (model, runtime, quant), group in groups.items():
        gateway = _gateway(group)
        by_suite: dict[str, list[float]] = defaultdict(list)
        informs: list[str] = []
        for record in group:
            q = quality(record, trust)
            if q is not None:
                by_suite[record.case.suite].append(q)
            elif record.verdict is not None and informs_only(record, trust) \
                    and record.case.suite not in informs:
                informs.append(record.case.suite)
        parts = tuple(Part(s, weight_of(s), sum(qs) / len(qs), len(qs))
                      for s, qs in by_suite.items())
        if gateway.startswith("failed"):
            score: int | None = 0
        elif gateway != "passed" or not parts:
            score = None
        else:
            total = sum(p.weight for p in parts)
            score = round(1000 * sum(p.weight * p.quality for p in parts) / total)
        out.append(Qualification(model, runtime, quant, score, gateway, parts, tuple(informs)))
    return out


def suite_quality(records: Iterable[ParityRecord]) -> dict[tuple[Key, str], float]:
    """Mean quality per (model, runtime, quantization label) and suite, for colouring
    matrix cells (pair rows included)."""
    found: dict[tuple[Key, str], list[float]] = defaultdict(list)
    for record in records:
        case = record.case
        q = quality(record)
        if q is None and record.verdict is not None:  # the gateway, perf: their verdict
            q = 1.0 if record.verdict is Verdict.CORROBORATED else 0.0
        if q is not None:
            found[((case.model, case.runtime, case.quant_label), case.suite)].append(q)
    return {k: sum(v) / len(v) for k, v in found.items()}


def required_grade(records: Iterable[ParityRecord]) -> str:
    """The strictest ``min_grade`` among the records' configurations ("" for none)."""
    grades = {r.settings.min_grade for r in records if r.settings.min_grade}
    return max(grades, key=grade_floor, default="")


def below_minimum(records: Sequence[ParityRecord]) -> list[str]:
    """One line per combination scoring below its configuration's minimum grade."""
    by_key: dict[Key, list[ParityRecord]] = defaultdict(list)
    for record in records:
        by_key[(record.case.model, record.case.runtime, record.case.quant)].append(record)
    lines = []
    for q in qualify(records):
        grade = required_grade(by_key[(q.model, q.runtime, q.quant)])
        if grade and q.below(grade):
            why = "" if q.gateway == "passed" else f"; gateway {q.gateway}"
            lines.append(f"{q.model}/{q.runtime}/{q.quant} scores {q.score} ({q.grade}), below "
                         f"the minimum grade {grade} ({grade_floor(grade)}){why}")
    return lines
