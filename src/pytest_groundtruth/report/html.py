"""pytest-html integration: each parity test's explanation, side-by-side view and chart,
and the matrix on top, its cells coloured by score.

HTML is built with :mod:`html` escaping only (no template engine, no scripts). The extra
is the dictionary format pytest-html reads from ``report.extras``; it is
JSON-serialisable, so it travels from xdist workers to the controller with the report.

* Every parity test shows its outcome (Corroborated, Falsified, Timeout, Crashed), its
  explanation and, for each prompt it generated, an inline SVG chart
  (:mod:`pytest_groundtruth.report.chart`); a failing one also shows the oracle's text and
  the runtime's side by side with the first difference marked.
* The matrix colours each cell by the quality of its tests (red 0 to green 1; grey when
  skipped) and each combination's score cell by its score, so a reader sees where it
  breaks before reading a table.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pytest_groundtruth.report.chart import svg
from pytest_groundtruth.report.grid import LEGEND, SCORE_COLUMN, aggregate, cell_text, scores_by_row
from pytest_groundtruth.report.outcomes import Verdict
from pytest_groundtruth.report.records import ParityRecord
from pytest_groundtruth.report.score import suite_quality
from pytest_groundtruth.report.sidebyside import SideBySide, html_view
from pytest_groundtruth.suites.result import SuiteResult

SKIPPED = "#e2e3e5"
OUTCOME_COLOURS = {Verdict.CORROBORATED: "#d1e7dd", Verdict.FALSIFIED: "#f8d7da",
                   Verdict.TIMEOUT: "#ffe5b4", Verdict.CRASHED: "#e4c1f9"}


def colour(quality: float) -> str:
    """Red at 0.5 and below, through orange and yellow (0.8: exactly at a bound, a B) to
    green at 1: the range where qualities differ is the range that gets the hues."""
    q = max(0.0, min(1.0, (quality - 0.5) / 0.5))
    return f"hsl({120 * q:.0f}, 65%, 80%)"


def _table(header: list[str], rows: list[list[str]], styles: list[list[str]] | None = None,
           titles: list[list[str]] | None = None, css: str = "groundtruth") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        tds = []
        for j, cell in enumerate(row):
            style = styles[i][j] if styles else ""
            title = titles[i][j] if titles else ""
            attrs = (f' style="background:{style}"' if style else "") + (
                f' title="{html.escape(title)}"' if title else "")
            tds.append(f"<td{attrs}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<table class="{css}" border="1" cellpadding="3">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def result_html(result: SuiteResult, verdict: Verdict | None = None,
                views: Sequence[SideBySide] = ()) -> str:
    parts = []
    if verdict is not None:
        parts.append(f'<p class="gt-outcome" style="background:'
                     f'{OUTCOME_COLOURS[verdict]}">outcome: <b>{verdict}</b></p>')
    parts.append(f"<p><b>{html.escape(result.case.name)}</b>: {html.escape(result.summary)}</p>")
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
    if not result.passed:
        parts.extend(html_view(v) for v in views)
    if views:
        parts.append('<div class="gt-charts">' + "".join(
            f'<figure class="gt-figure"><figcaption>{html.escape(v.prompt)}: '
            f"{html.escape(v.agreement_line())}</figcaption>{svg(v)}</figure>"
            for v in views) + "</div>")
    elif result.case.prompt is None and result.case.suite != "gateway":
        parts.append('<p class="gt-no-chart">no per-position chart: this test does not '
                     "generate (it scores, measures perplexity or reads the file)</p>")
    for label, value in (("artifact", result.artifact), ("built by", result.recipe)):
        if value:
            parts.append(f"<p>{label}: <code>{html.escape(value)}</code></p>")
    for call in result.calls:
        parts.append(f"<p>output of: <code>{html.escape(call)}</code></p>")
    return '<div class="groundtruth-result">' + "".join(parts) + "</div>"


def extra_for(result: SuiteResult, verdict: Verdict | None = None,
              views: Sequence[SideBySide] = ()) -> dict[str, Any]:
    """A pytest-html extra (dict form) holding the result's explanation."""
    return {"name": "groundtruth", "format_type": "html", "extension": "html",
            "content": result_html(result, verdict, views), "mime_type": None}


def matrix_html(records: Sequence[ParityRecord]) -> str:
    notes: dict[str, None] = {}  # ordered, without repeats
    for record in records:
        notes[f"configuration: {', '.join(record.settings.sources)}"] = None
        notes[f"perplexity text: {record.settings.eval_text}"] = None
    suites, cells = aggregate(records)
    if not cells:
        return ""
    scores = scores_by_row(records)
    qualities = suite_quality(records)
    rows, styles, titles = [], [], []
    for row in sorted(cells):
        counts = [cells[row].get(s, Counter()) for s in suites]
        texts = [cell_text(c) for c in counts]
        style, title = ["", "", ""], ["", "", ""]
        for suite, text in zip(suites, texts, strict=True):
            q = qualities.get((row, suite))
            style.append(colour(q) if q is not None else (SKIPPED if text else ""))
            title.append(f"{suite}: quality {q:.2f}" if q is not None else "")
        found = scores.get(row)
        label = found.label if found is not None else ""
        score_value = found.score if found is not None else None
        style.append(colour(score_value / 1000) if score_value is not None else "")
        title.append(f"gateway {found.gateway}; " + ", ".join(
            f"{p.suite} {p.quality:.2f} x {p.weight:g}" for p in found.parts)
            if found is not None else "")
        rows.append([*row, *texts, label])
        styles.append(style)
        titles.append(title)
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    return ("<h2>Parity matrix</h2>" + notes_html
            + _table(["model", "runtime", "quant", *suites, SCORE_COLUMN], rows, styles, titles,
                     css="groundtruth gt-matrix")
            + f'<p class="gt-legend">{html.escape(LEGEND)}. Cells are coloured by the quality '
            "of their tests (red at 0.5 and below, yellow at 0.8 = a bound met exactly, green "
            "at 1), the score by score / 1000 (docs/qualification.md).</p>")
