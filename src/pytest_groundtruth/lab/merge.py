"""``groundtruth merge``: the results JSON of several shards -> the reports of one run.

Each shard of a sharded run (``pytest --gt-shard K/N --gt-results shard-K.json``) writes
the records of its tests; merged, they are the records one unsharded run would have
(every test ran in exactly one shard), and every report is written from them by the
writers a run uses: the results JSON (:mod:`~pytest_groundtruth.report.results_json`,
with the qualification scores), the ticket, the terminal matrix, JUnit XML
(:mod:`~pytest_groundtruth.report.junit`) and an HTML page
(:mod:`~pytest_groundtruth.report.page`: pytest-html's page cannot be rebuilt from JSON).

What equals one run's output (tests/unit/test_shards.py compares them): the merged
results JSON without its timing fields (``started``, ``finished``, ``durations`` and each
result's ``duration``: :func:`~pytest_groundtruth.report.results_json.comparable`); the
ticket without its date line; the matrix. The merged run started when the first shard
started and finished when the last one finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.report import grid, junit, page, results_json, ticket
from pytest_groundtruth.report.records import ParityRecord, Run
from pytest_groundtruth.report.results_json import ResultsError


@dataclass(frozen=True)
class Outputs:
    results: Path | None = None
    html: Path | None = None
    junit: Path | None = None
    ticket: Path | None = None


def merge(paths: Sequence[Path]) -> Run:
    """One run from the shards' results documents; a test in two of them is an error."""
    if not paths:
        raise ResultsError("no results files to merge")
    runs = [(path, results_json.read(path)) for path in paths]
    seen: dict[str, Path] = {}
    records: list[ParityRecord] = []
    durations: dict[str, float] = {}
    for path, run in runs:
        for record in run.records:
            if record.nodeid in seen:
                raise ResultsError(
                    f"{record.nodeid} is in both {seen[record.nodeid]} and {path}: the "
                    "shards overlap (run every shard with the same N, tests and options, "
                    "or merge each file once)")
            seen[record.nodeid] = path
            records.append(record)
        durations.update(run.durations)
    started = min(run.started for _, run in runs)
    finished = max((run.finished or run.started) for _, run in runs)
    return Run(started=started, records=sorted(records, key=lambda r: r.nodeid),
               finished=finished, durations=dict(sorted(durations.items())))


def write(run: Run, outputs: Outputs) -> list[str]:
    """Write the requested files; a line per file (the ticket says when nothing failed)."""
    lines = []
    if outputs.results is not None:
        results_json.write(outputs.results, run)
        lines.append(f"groundtruth results: {outputs.results}")
    if outputs.ticket is not None:
        if ticket.write(outputs.ticket, run.records):
            lines.append(f"groundtruth ticket: {outputs.ticket}")
        else:
            lines.append("groundtruth ticket: no parity failures, nothing written")
    if outputs.junit is not None:
        junit.write(outputs.junit, run)
        lines.append(f"groundtruth junit: {outputs.junit}")
    if outputs.html is not None:
        page.write(outputs.html, run)
        lines.append(f"groundtruth html: {outputs.html}")
    return lines


def matrix(run: Run) -> list[str]:
    return grid.render_text(run.records)
