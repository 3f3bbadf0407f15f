"""pytest-html integration: a token table extra per parity test, the matrix on top.

HTML is built with :mod:`html` escaping only (no template engine). The extra is the
dictionary format pytest-html reads from ``report.extras``; it is JSON-serialisable,
so it travels from xdist workers to the controller with the report.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pytest_groundtruth.report.grid import aggregate, cell_status, cell_text
from pytest_groundtruth.report.records import ParityRecord
from pytest_groundtruth.suites.result import SuiteResult

COLOURS = {"failed": "#f8d7da", "xpassed": "#f8d7da", "xfailed": "#fff3cd",
           "passed": "#d1e7dd", "skipped": "#e2e3e5"}


def _table(header: list[str], rows: list[list[str]], styles: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        style = f' style="background:{styles[i]}"' if styles and styles[i] else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return (f'<table class="groundtruth" border="1" cellpadding="3">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def result_html(result: SuiteResult) -> str:
    parts = [f"<p><b>{html.escape(result.case.name)}</b>: {html.escape(result.summary)}</p>"]
    if result.bound is not None:
        parts.append(f"<p>bound: {html.escape(str(result.bound))} "
                     f"({html.escape(result.bound_origin or 'default')})</p>")
    for note in result.notes:
        parts.append(f"<p>note: {html.escape(note)}</p>")
    if result.table:
        parts.append("<pre>" + html.escape("\n".join(result.table)) + "</pre>")
    if result.rows:
        rows = [
            [str(r.position), "" if r.oracle_id is None else str(r.oracle_id),
             repr(r.oracle_text), "" if r.runtime_id is None else str(r.runtime_id),
             repr(r.runtime_text),
             "" if r.oracle_logprob is None else f"{r.oracle_logprob:.3f}",
             f"yes ({r.margin:.3f})" if r.near_tie and r.margin is not None else ""]
            for r in result.rows
        ]
        parts.append(_table(["pos", "oracle id", "oracle text", "runtime id", "runtime text",
                             "oracle logp(runtime)", "near tie"], rows))
    for label, value in (("artifact", result.artifact), ("built by", result.recipe)):
        if value:
            parts.append(f"<p>{label}: <code>{html.escape(value)}</code></p>")
    for call in result.calls:
        parts.append(f"<p>output of: <code>{html.escape(call)}</code></p>")
    return '<div class="groundtruth-result">' + "".join(parts) + "</div>"


def extra_for(result: SuiteResult) -> dict[str, Any] | None:
    """A pytest-html extra (dict form) holding the result's explanation."""
    return {"name": "groundtruth", "format_type": "html", "extension": "html",
            "content": result_html(result), "mime_type": None}


def matrix_html(records: Sequence[ParityRecord]) -> str:
    notes: dict[str, None] = {}  # ordered, without repeats
    for record in records:
        notes[f"configuration: {', '.join(record.settings.sources)}"] = None
        notes[f"perplexity text: {record.settings.eval_text}"] = None
    suites, cells = aggregate(records)
    if not cells:
        return ""
    rows, styles = [], []
    for row in sorted(cells):
        counts = [cells[row].get(s, Counter()) for s in suites]
        rows.append([*row, *(cell_text(c) for c in counts)])
        worst = next((cell_status(c) for c in counts if cell_status(c) in ("failed", "xpassed")),
                     cell_status(sum(counts, Counter())))
        styles.append(COLOURS.get(worst, ""))
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    return ("<h2>Parity matrix</h2>" + notes_html
            + _table(["model", "runtime", "quant", *suites], rows, styles))
