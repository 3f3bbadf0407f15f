"""``--gt-ticket FILE``: a GitHub issue in markdown describing the parity failures.

The original workflow's layout: "## Model Parity Failures", the date, tool versions,
oracle provenance, "### N failure(s)", one "#### `suite/id`" block per failure with the
error and details, then the commands that reproduce them. Nothing is written when
nothing failed.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Sequence
from pathlib import Path

from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.report.provenance import oracle_provenance, tool_versions
from pytest_groundtruth.report.records import ParityRecord
from pytest_groundtruth.suites.result import render_table


def _details(record: ParityRecord) -> list[str]:
    result = record.result
    if result is None:
        return [f"**Error:** {record.failure or 'error'}: {record.reason}"]
    lines = [f"**Error:** {result.summary}"]
    if result.bound is not None:
        lines.append(f"**Bound:** {result.bound} ({result.bound_origin or 'default'})")
    if result.first_divergence is not None:
        lines.append(f"**First divergence:** position {result.first_divergence}")
    lines.extend(f"**Note:** {n}" for n in result.notes)
    if result.table:
        lines += ["", "```", *result.table, "```"]
    if result.rows:
        lines += ["", "```", *render_table(result.rows), "```"]
    for label, value in (("Artifact", result.artifact), ("Built by", result.recipe)):
        if value:
            lines.append(f"**{label}:** `{value}`")
    lines.extend(f"**Output of:** `{call}`" for call in result.calls)
    if record.runtime_version:
        lines.append(f"**Runtime:** {record.runtime_version}")
    return lines


def render(records: Sequence[ParityRecord]) -> str | None:
    # By node id, not by completion order: one run, with or without workers, or the
    # shards of a run merged (groundtruth merge) write the same ticket.
    failures = sorted((r for r in records if r.failed), key=lambda r: r.nodeid)
    if not failures:
        return None
    versions = tool_versions(records)
    engines = versions.pop("runtimes", {})
    out = [
        "## Model Parity Failures",
        "",
        f"**Date:** {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        "**Tool versions:** " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        *(["**Runtimes:** " + "; ".join(f"{k}: {v}" for k, v in engines.items())]
          if engines else []),
        "",
        "**Oracle provenance:**",
    ]
    for slug, prov in oracle_provenance(records).items():
        out.append(
            f"- `{slug}`: {prov['oracle_dir']} ({prov['source']}, {prov['dtype']} on "
            f"{prov['device']}, transformers {prov['transformers_version']}, torch "
            f"{prov['torch_version']}, weights sha256 {str(prov['model_fingerprint'])[:16]})"
        )
    out += ["", f"### {len(failures)} failure(s)", ""]
    for record in failures:
        out += [f"#### `{record.case.suite}/{record.case.id}`", "", *_details(record), ""]
    out += ["### Reproduction", "", "```bash"]
    out += [f"pytest {shlex.quote(r.nodeid)}" for r in failures[:20]]
    models = sorted({r.case.model for r in failures})
    out += [f"groundtruth oracle --check --model {m}" for m in models]
    out += ["```", ""]
    return "\n".join(out)


def write(path: Path, records: Sequence[ParityRecord]) -> bool:
    text = render(records)
    if text is None:
        return False
    atomic_write_text(path, text)
    return True
