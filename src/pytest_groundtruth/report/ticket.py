"""``--gt-ticket FILE``: a GitHub issue in markdown describing the parity failures.

The original workflow's layout: "## Model Parity Failures", the date, tool versions,
oracle provenance, "### N failure(s)", one "#### `suite/id`" block per failure with the
error and details, then the commands that reproduce them. Nothing is written when
nothing failed.
"""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.report.provenance import oracle_provenance, tool_versions
from pytest_groundtruth.suites.result import render_table

if TYPE_CHECKING:
    from pytest_groundtruth.plugin.session import GroundtruthState

FAILED = ("failed", "xpassed")


def _details(record: dict[str, Any]) -> list[str]:
    from pytest_groundtruth.suites.result import TokenRow

    result = record.get("result")
    if not result:
        return [f"**Error:** {record.get('fault', 'error')}: {record.get('reason', '')}"]
    lines = [f"**Error:** {result['summary']}"]
    if result.get("bound") is not None:
        lines.append(f"**Bound:** {result['bound']} ({result.get('bound_origin') or 'default'})")
    if result.get("first_divergence") is not None:
        lines.append(f"**First divergence:** position {result['first_divergence']}")
    lines.extend(f"**Note:** {n}" for n in result.get("notes", []))
    if result.get("table"):
        lines += ["", "```", *result["table"], "```"]
    if result.get("rows"):
        table = render_table([TokenRow(**row) for row in result["rows"]])
        lines += ["", "```", *table, "```"]
    for label, key in (("Artifact", "artifact"), ("Built by", "recipe")):
        if result.get(key):
            lines.append(f"**{label}:** `{result[key]}`")
    lines.extend(f"**Output of:** `{call}`" for call in result.get("calls", []))
    if record.get("runtime_version"):
        lines.append(f"**Runtime:** {record['runtime_version']}")
    return lines


def render(state: GroundtruthState) -> str | None:
    failures = [r for r in state.records if r["outcome"] in FAILED]
    if not failures:
        return None
    versions = tool_versions(state)
    out = [
        "## Model Parity Failures",
        "",
        f"**Date:** {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        "**Tool versions:** " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "**Oracle provenance:**",
    ]
    for slug, prov in oracle_provenance(state).items():
        out.append(
            f"- `{slug}`: {prov['oracle_dir']} ({prov['source']}, {prov['dtype']} on "
            f"{prov['device']}, transformers {prov['transformers_version']}, torch "
            f"{prov['torch_version']}, weights sha256 {str(prov['model_fingerprint'])[:16]})"
        )
    out += ["", f"### {len(failures)} failure(s)", ""]
    for record in sorted(failures, key=lambda r: r["nodeid"]):
        case = record["case"]
        out += [f"#### `{case['suite']}/{case['id']}`", "", *_details(record), ""]
    out += ["### Reproduction", "", "```bash"]
    out += [f"pytest {shlex.quote(r['nodeid'])}" for r in failures[:20]]
    models = sorted({r["case"]["model"] for r in failures})
    out += [f"groundtruth oracle --check --model {m}" for m in models]
    out += ["```", ""]
    return "\n".join(out)


def write(path: Path, state: GroundtruthState) -> bool:
    text = render(state)
    if text is None:
        return False
    atomic_write_text(path, text)
    return True
