"""``--gt-results FILE``: every parity test's measurement as one JSON document."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.report.provenance import oracle_provenance, tool_versions
from pytest_groundtruth.report.records import Run
from pytest_groundtruth.report.score import qualify

SCHEMA = "pytest-groundtruth/results/1"


def write(path: Path, run: Run) -> None:
    document = {
        "schema": SCHEMA,
        "started": run.started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": tool_versions(run.records),
        "oracles": oracle_provenance(run.records),
        "results": [r.to_json() for r in sorted(run.records, key=lambda r: r.nodeid)],
        # score and grade per model x runtime x quantization (docs/qualification.md)
        "qualification": [q.to_json() for q in qualify(run.records)],
    }
    atomic_write_text(path, json.dumps(document, indent=2, ensure_ascii=False, default=str)
                      + "\n")
