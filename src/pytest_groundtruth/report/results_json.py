"""``--gt-results FILE``: every parity test's measurement as one JSON document."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.report.provenance import oracle_provenance, tool_versions

if TYPE_CHECKING:
    from pytest_groundtruth.plugin.session import GroundtruthState

SCHEMA = "pytest-groundtruth/results/1"


def write(path: Path, state: GroundtruthState) -> None:
    document = {
        "schema": SCHEMA,
        "started": state.started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": tool_versions(state),
        "oracles": oracle_provenance(state),
        "results": sorted(state.records, key=lambda r: r["nodeid"]),
    }
    atomic_write_text(path, json.dumps(document, indent=2, ensure_ascii=False, default=str)
                      + "\n")
