"""A standalone HTML report of a run's records (``groundtruth merge --html``).

pytest-html builds its page from live test reports (captured output, tracebacks,
extras), which a results JSON does not hold, so it cannot be regenerated after the
run: a sharded run has one pytest-html page per shard. This page is written from the
records alone, with the writers the pytest-html integration uses (:mod:`.html`): the
parity matrix coloured by quality and score, then one row per test with its outcome
and the explanation each parity test shows in pytest-html (summary, bound, notes,
token table, artifact, commands). The per-prompt charts and side-by-side views are
built from the engines' cached generations while the test runs and are not in the
records: they are in each shard's pytest-html page.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.report.html import matrix_html, result_html
from pytest_groundtruth.report.records import Run

STYLE = ("body{font-family:sans-serif;margin:1em}table.groundtruth{border-collapse:collapse}"
         "td,th{vertical-align:top;text-align:left}.gt-tests td{font-size:90%}")


def render(run: Run, title: str = "pytest-groundtruth parity report") -> str:
    records = sorted(run.records, key=lambda r: r.nodeid)
    counts = Counter(r.outcome.value if r.outcome is not None else "" for r in records)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    finished = run.finished.isoformat(timespec="seconds") if run.finished else ""
    rows = []
    for r in records:
        detail = (result_html(r.result, r.verdict) if r.result is not None
                  else f"<p>{html.escape(r.reason)}</p>" if r.reason else "")
        rows.append(f"<tr><td><code>{html.escape(r.nodeid)}</code></td>"
                    f"<td>{html.escape(str(r.outcome or ''))}</td>"
                    f"<td>{html.escape(str(r.verdict or ''))}</td>"
                    f"<td>{r.duration:.2f}</td><td>{detail}</td></tr>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p class=\"gt-run\">started {run.started.isoformat(timespec='seconds')}, finished "
        f"{finished}</p>\n"
        f"<p class=\"gt-summary\">{len(records)} parity tests: {html.escape(summary)}</p>\n"
        f"{matrix_html(records)}\n"
        "<h2>Tests</h2>\n<table class=\"groundtruth gt-tests\" border=\"1\" cellpadding=\"3\">"
        "<thead><tr><th>test</th><th>result</th><th>outcome</th><th>seconds</th>"
        "<th>explanation</th></tr></thead><tbody>\n" + "\n".join(rows)
        + "\n</tbody></table>\n</body></html>\n"
    )


def write(path: Path, run: Run) -> None:
    atomic_write_text(path, render(run))
