"""The parity matrix: models x runtimes x quantizations, one cell per suite.

Built from the run's records (one per parity test). Each cell counts outcomes,
e.g. ``2 FAIL 2 pass`` or ``skip``; the terminal and the HTML report render the same
data.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from pytest_groundtruth.core.tables import text_table
from pytest_groundtruth.report.records import ParityRecord

ORDER = ("failed", "xpassed", "xfailed", "passed", "skipped")
LABEL = {"failed": "FAIL", "xpassed": "XPASS", "xfailed": "xfail", "passed": "pass",
         "skipped": "skip"}

Row = tuple[str, str, str]  # model, runtime, quant


def aggregate(records: Iterable[ParityRecord]
              ) -> tuple[list[str], dict[Row, dict[str, Counter[str]]]]:
    suites: list[str] = []
    cells: dict[Row, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for record in records:
        case = record.case
        if case.suite not in suites:
            suites.append(case.suite)
        cells[(case.model, case.runtime, case.quant_label)][case.suite][record.outcome] += 1
    return suites, dict(cells)


def cell_text(counts: Counter[str]) -> str:
    if not counts:
        return ""
    if set(counts) == {"skipped"}:
        return "skip"
    return " ".join(f"{counts[o]} {LABEL[o]}" for o in ORDER if counts.get(o))


def cell_status(counts: Counter[str]) -> str:
    """The worst outcome in the cell (for colouring)."""
    return next((o for o in ORDER if counts.get(o)), "")


def render_text(records: Sequence[ParityRecord]) -> list[str]:
    suites, cells = aggregate(records)
    if not cells:
        return []
    header = ["model", "runtime", "quant", *suites]
    rows = [
        [*row, *(cell_text(cells[row].get(s, Counter())) for s in suites)]
        for row in sorted(cells)
    ]
    return text_table(header, rows)
