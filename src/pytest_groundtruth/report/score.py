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
  skipped one does not count.

Pair tests (drift, the perplexity gap) compare two quantizations and belong to neither;
``perf`` measures the machine and never counts (timings are not part of the score).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pytest_groundtruth.config.qualification import grade_floor, grade_of
from pytest_groundtruth.report.records import ParityRecord
from pytest_groundtruth.suites.result import SuiteResult

AT_BOUND = 0.8  # the quality of a measurement exactly at its bound
BEYOND = 3.0  # past the bound, quality reaches 0 at this multiple of it
WORST_MISMATCHES = 32  # the original workflow's max_new_tokens: every position differs
GATEWAY = "gateway"
NOT_SCORED = ("perf", GATEWAY)  # timings; the gateway is a gate, not a weight
DEFAULT_WEIGHT = 10.0

Key = tuple[str, str, str]  # model, runtime, quantization


def headroom(measured: float, bound: float, worst: float) -> float:
    """1 at ``measured`` <= 0, 0.8 at the bound, 0 at ``worst`` (linear in between)."""
    if measured <= 0:
        return 1.0
    if bound > 0 and measured <= bound:
        return 1.0 - (1.0 - AT_BOUND) * measured / bound
    if worst <= bound:
        return 0.0
    return max(0.0, AT_BOUND * (worst - measured) / (worst - max(bound, 0.0)))


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def q_mismatches(r: SuiteResult) -> float:
    """Token counts (token, canary, roundtrip, cuda): mismatches against the bound."""
    m = _number(r.measured)
    return headroom(m, _number(r.bound), max(WORST_MISMATCHES, m))


def q_topk(r: SuiteResult) -> float:
    """vLLM's rule: 1 with no divergence; at a divergence inside the top-k, 1 for rank 1
    down to 0.8 for rank k (the worse of the two sides' ranks); outside it, 0."""
    if not r.passed:
        return 0.0
    if r.first_divergence is None:
        return 1.0
    k = int(_number(r.details.get("k"), 5))
    ranks = [_number(r.details.get(s), k) for s in ("oracle_rank_of_runtime",
                                                     "runtime_rank_of_oracle")]
    return 1.0 - (1.0 - AT_BOUND) * (max(ranks) - 1) / max(k - 1, 1)


def q_agreement(r: SuiteResult) -> float:
    """Teacher-forced top-1 agreement (its shortfall from 1) and KL, each against its
    bound, averaged."""
    measured = r.measured if isinstance(r.measured, dict) else {}
    bound = r.bound if isinstance(r.bound, dict) else {}
    prefix = "text_" if "text_max_kl" in bound else ""  # the text case's bounds
    deficit = 1.0 - _number(measured.get("top1"))
    allowed = 1.0 - _number(bound.get(f"{prefix}min_top1"))
    kl, max_kl = _number(measured.get("kl")), _number(bound.get(f"{prefix}max_kl"))
    return (headroom(deficit, allowed, min(1.0, BEYOND * allowed))
            + headroom(kl, max_kl, BEYOND * max_kl)) / 2


def q_perplexity(r: SuiteResult) -> float:
    """Perplexity above the oracle's, against the ceiling's distance from the oracle's
    (the perplexity itself against the ceiling when no oracle record was comparable);
    the int8/int4 gap against its bound."""
    if r.case.variant == "gap":
        gap, max_gap = _number(r.measured), _number(r.bound)
        return headroom(gap, max_gap, BEYOND * max_gap)
    ppl, ceiling = _number(r.measured), _number(r.bound)
    oracle = _number(r.details.get("oracle_perplexity"), 0.0)
    if oracle and ceiling > oracle:
        excess, room = max(0.0, ppl - oracle), ceiling - oracle
    else:
        excess, room = ppl, ceiling
    return headroom(excess, room, BEYOND * room)


def q_integrity(r: SuiteResult) -> float:
    """Findings on the file: none is 1, each one costs a tenth below the bound's 0.8."""
    return 1.0 if r.passed else headroom(_number(r.measured), 0.0, 10.0)


@dataclass(frozen=True)
class Weight:
    weight: float
    quality: Callable[[SuiteResult], float]
    reason: str  # docs/qualification.md prints these


WEIGHTS: dict[str, Weight] = {
    "agreement": Weight(30, q_agreement, "teacher-forced over every prompt's positions, so "
                        "one early near-tie flip cannot cascade; bounds calibrated on correct "
                        "conversions: the strongest black-box measure"),
    "topk": Weight(15, q_topk, "judges the first divergence by how likely the oracle found the "
                   "runtime's token: robust to near ties, per prompt"),
    "ppl": Weight(15, q_perplexity, "whole-text damage in one number against the oracle's "
                  "perplexity; insensitive to where a flip happens"),
    "integrity": Weight(15, q_integrity, "white-box: the file's metadata, tokenizer and "
                        "tensors; separates broken from honest int4 files where black-box "
                        "bounds cannot"),
    "token": Weight(10, q_mismatches, "the original workflow's count; weak on a small model "
                    "(one near tie makes the rest drift), so it weighs little"),
    "canary": Weight(5, q_mismatches, "exact text at int8: all or nothing, the weakest "
                     "instrument on a small model"),
    "roundtrip": Weight(5, q_mismatches, "export + reimport losslessness: a converter "
                        "property more than the runtime's quality"),
    "cuda": Weight(10, q_mismatches, "the GPU precision ladder, where it runs"),
    # Pair tests (int8 against int4) belong to neither combination: they colour their own
    # matrix row and never enter a score.
    "drift": Weight(0, q_mismatches, "pair test: colours its matrix row, never scored"),
}


def quality(record: ParityRecord) -> float | None:
    """A test's quality in [0, 1]; None when it does not count (skipped, not scored)."""
    if record.case.suite in NOT_SCORED or not record.verdict:
        return None
    if record.result is None:
        return 0.0  # crashed or timed out before a verdict
    weight = WEIGHTS.get(record.case.suite)
    if weight is None:  # a suite this table does not know: its verdict
        return 1.0 if record.result.passed else 0.0
    return max(0.0, min(1.0, weight.quality(record.result)))


def weight_of(suite: str) -> float:
    found = WEIGHTS.get(suite)
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
                "parts": [asdict(p) for p in self.parts]}


def _gateway(records: list[ParityRecord]) -> str:
    gates = [r for r in records if r.case.suite == GATEWAY]
    if not gates:
        return "not run"
    if all(r.outcome == "skipped" and not r.verdict for r in gates):
        return f"skipped: {gates[0].reason}"
    failed = [r for r in gates if r.verdict and r.verdict != "Corroborated"]
    if failed:
        r = failed[0]
        return f"failed: {r.result.summary if r.result is not None else r.reason}"
    return "passed"


def qualify(records: Iterable[ParityRecord]) -> list[Qualification]:
    """A qualification per model x runtime x quantization that has single-artifact tests,
    in the records' order."""
    groups: dict[Key, list[ParityRecord]] = defaultdict(list)
    for record in records:
        if record.case.other is None:
            groups[(record.case.model, record.case.runtime, record.case.quant)].append(record)
    out = []
    for (model, runtime, quant), group in groups.items():
        gateway = _gateway(group)
        by_suite: dict[str, list[float]] = defaultdict(list)
        for record in group:
            q = quality(record)
            if q is not None:
                by_suite[record.case.suite].append(q)
        parts = tuple(Part(s, weight_of(s), sum(qs) / len(qs), len(qs))
                      for s, qs in by_suite.items())
        if gateway.startswith("failed"):
            score: int | None = 0
        elif gateway != "passed" or not parts:
            score = None
        else:
            total = sum(p.weight for p in parts)
            score = round(1000 * sum(p.weight * p.quality for p in parts) / total)
        out.append(Qualification(model, runtime, quant, score, gateway, parts))
    return out


def suite_quality(records: Iterable[ParityRecord]) -> dict[tuple[Key, str], float]:
    """Mean quality per (model, runtime, quantization label) and suite, for colouring
    matrix cells (pair rows included)."""
    found: dict[tuple[Key, str], list[float]] = defaultdict(list)
    for record in records:
        case = record.case
        q = quality(record)
        if q is None and record.verdict:  # the gateway, perf: their verdict
            q = 1.0 if record.verdict == "Corroborated" else 0.0
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
