"""The parity matrix: models x runtimes x quantizations, one cell per suite, and the score.

Built from the run's records (one per parity test). Each cell counts the tests' outcomes
(report/outcomes.py) by code, e.g. ``2F 2C`` (two Falsified, two Corroborated) or
``skip``; the last column is the combination's qualification score and grade
(report/score.py). The terminal and the HTML report render the same data.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from pytest_groundtruth.core.tables import text_table
from pytest_groundtruth.report.outcomes import Outcome, Verdict
from pytest_groundtruth.report.records import ParityRecord
from pytest_groundtruth.report.score import Qualification, qualify
from pytest_groundtruth.suites.spec import suite_names

# (code, meaning), in the order cells list them: the worst first.
CODES = (
    ("E", "error before a verdict, not the engine's (e.g. the cache's disk is full)"),
    ("X", f"{Verdict.CRASHED}"),
    ("T", f"{Verdict.TIMEOUT}"),
    ("F", f"{Verdict.FALSIFIED}"),
    ("C!", f"{Verdict.CORROBORATED}, but listed as a known falsification (XPASS: fails the run)"),
    ("f", f"{Verdict.FALSIFIED}, known (baseline: xfail)"),
    ("C", f"{Verdict.CORROBORATED}"),
    ("s", "skipped"),
)
CODE = {Verdict.CORROBORATED: "C", Verdict.FALSIFIED: "F", Verdict.TIMEOUT: "T",
        Verdict.CRASHED: "X"}
ORDER = tuple(code for code, _ in CODES)
LEGEND = "  ".join(f"{code} {meaning}" for code, meaning in CODES)
SCORE_COLUMN = "score"

Row = tuple[str, str, str]  # model, runtime, quant


def code_of(record: ParityRecord) -> str:
    """The cell code of one test: its outcome, with the baseline's xfail/XPASS marked."""
    if record.verdict is None:
        return "E" if record.outcome is Outcome.FAILED else "s"
    if record.outcome is Outcome.XPASSED:
        return "C!"
    if record.outcome is Outcome.XFAILED and record.verdict is Verdict.FALSIFIED:
        return "f"
    return CODE[record.verdict]


def aggregate(records: Iterable[ParityRecord]
              ) -> tuple[list[str], dict[Row, dict[str, Counter[str]]]]:
    suites: list[str] = []
    cells: dict[Row, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for record in records:
        case = record.case
        if case.suite not in suites:
            suites.append(case.suite)
        cells[(case.model, case.runtime, case.quant_label)][case.suite][code_of(record)] += 1
    rank = {name: i for i, name in enumerate(suite_names())}  # the same order, serial or -n
    suites.sort(key=lambda s: rank.get(s, len(rank)))
    return suites, dict(cells)


def cell_text(counts: Counter[str]) -> str:
    if not counts:
        return ""
    if set(counts) == {"s"}:
        return "skip"
    return " ".join(f"{counts[c]}{c}" for c in ORDER if counts.get(c))


def cell_status(counts: Counter[str]) -> str:
    """The worst code in the cell."""
    return next((c for c in ORDER if counts.get(c)), "")


def scores_by_row(records: Sequence[ParityRecord]) -> dict[Row, Qualification]:
    return {(q.model, q.runtime, q.quant): q for q in qualify(records)}


def render_text(records: Sequence[ParityRecord]) -> list[str]:
    suites, cells = aggregate(records)
    if not cells:
        return []
    scores = scores_by_row(records)
    header = ["model", "runtime", "quant", *suites, SCORE_COLUMN]
    rows = [
        [*row, *(cell_text(cells[row].get(s, Counter())) for s in suites),
         scores[row].label if row in scores else ""]
        for row in sorted(cells)
    ]
    return [*text_table(header, rows), LEGEND]
