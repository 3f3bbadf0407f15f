"""``groundtruth bench --memory``: the suites that load the float32 reference, run within a
memory budget below the model's float32 size.

The selection (``-k``: the agreement and rescore suites and the oracle drift check,
which regenerates the oracles: every float32 reference load of a parity run but
consistency's) runs three times in one cache, each a pytest process with
``GROUNDTRUTH_STATS`` set (:mod:`~pytest_groundtruth.plugin.stats`):

1. a preparing run (models resolved, artifacts converted), whose results are then dropped;
2. the selection with the default budget (the reference loaded whole), results dropped;
3. the same selection with ``--gt-max-memory`` set below the float32 size (default: 3/4
   of it), so the reference is loaded with accelerate's disk offload.

A separate process imports what the budgeted run imported (pytest, the plugin, the
engines) and reads its peak: the import floor, which no budget can lower. The verdict:
the budgeted run says what the unbudgeted one says (same outcomes) and its peak resident
memory is at most the budget plus that floor.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.config.settings import Settings, load_settings
from pytest_groundtruth.core import process
from pytest_groundtruth.core.budget import MIB, format_size, weights_bytes
from pytest_groundtruth.core.tables import markdown_table
from pytest_groundtruth.models.sources import resolve
from pytest_groundtruth.plugin.collection import CONFIG_FILE
from pytest_groundtruth.tools.benchmark import RunTiming, pytest_run

BEGIN = "<!-- groundtruth bench --memory -->"
END = "<!-- end of groundtruth bench --memory -->"
SUITES = "agreement or rescore"  # and the oracle drift check of the model itself
RUNTIME = "llamacpp"  # torchao quantizes a float32 model it holds whole: not budgeted
BUDGET_SHARE = 0.75  # of the float32 size, when no budget is given


@dataclass(frozen=True)
class MemoryRun:
    label: str
    budget: int | None
    run: RunTiming

    @property
    def peak(self) -> int:
        return max((s.peak_rss_bytes for s in self.run.stats), default=0)


def selection(slug: str) -> str:
    """``-k``: the suites' tests of ``slug`` and its own oracle drift check (not that of
    a model whose name starts with it)."""
    return f"(({SUITES}) and {slug}) or (oracle_drift and {slug}])"


def import_floor(modules: tuple[str, ...]) -> int:
    """The peak resident memory of a process that imports pytest, the plugin and
    ``modules`` (the engines a run imported) and does nothing else."""
    names = ["pytest", "pytest_groundtruth.plugin", *modules]
    code = (f"import {', '.join(names)}\n"
            "from pytest_groundtruth.core.budget import peak_bytes\nprint(peak_bytes())\n")
    proc = process.invoke([sys.executable, "-c", code], None, tool="python (import floor)")
    return int(proc.stdout.split()[-1])


def measure(settings: Settings, tests: str, cache: Path, budget: int | None = None
            ) -> tuple[list[MemoryRun], int, int]:
    """The three runs (see the module doc), the import floor and the float32 size."""
    root = settings.root
    parity = load_settings(root, [root / tests / CONFIG_FILE])
    model = resolve(parity.spec(parity.models[0]), cache, root, parity.roster)
    float32 = weights_bytes(model.path)
    budget = budget or int(float32 * BUDGET_SHARE) // MIB * MIB
    select = ["-k", selection(model.slug), f"--gt-runtime={RUNTIME}",
              f"--gt-model={model.slug}"]
    runs = []
    for label, limit in (("prepare", None), ("default budget", None), ("budget", budget)):
        extra = [*select, *([f"--gt-max-memory={limit}"] if limit else [])]
        timing = pytest_run(root, tests, cache, 0, label, extra)
        shutil.rmtree(cache / "results", ignore_errors=True)
        if label != "prepare":
            runs.append(MemoryRun(label, limit, timing))
    imported = tuple(m for m in runs[-1].run.stats[0].imported) if runs[-1].run.stats else ()
    return runs, import_floor((*imported, "accelerate")), float32


def section(runs: list[MemoryRun], floor: int, float32: int, slug: str) -> list[str]:
    rows = []
    outcomes = {r.label: r.run.summary.split(" in ")[0] for r in runs}
    for r in runs:
        limit = "-" if r.budget is None else format_size(r.budget)
        bound = "-" if r.budget is None else f"{(r.budget + floor) / MIB:.0f}"
        verdict = "-"
        if r.budget is not None:
            same = outcomes[r.label] == outcomes.get("default budget")
            within = r.peak <= r.budget + floor
            verdict = ("met" if same and within and r.run.returncode == 0 else
                       "MISSED" + ("" if within else " (over)") + ("" if same else
                                                                   " (outcomes differ)"))
        rows.append([r.label, limit, f"{r.peak / MIB:.0f}", bound, f"{r.run.seconds:.0f}",
                     r.run.summary, verdict])
    return [
        BEGIN, "",
        f"### Memory budget ({slug}: {float32 / MIB:.0f} MiB of float32 weights)", "",
        f"`pytest tests/parity -k \"{selection(slug)}\" --gt-runtime={RUNTIME} -n 0` in a warm "
        "artifact cache with no results: the oracle drift check regenerates the oracles, "
        "rescore and agreement score with the float32 reference. With `--gt-max-memory` "
        "below the float32 size the reference is loaded with accelerate's disk offload "
        f"(docs/memory.md). Import floor (pytest, the plugin and the engines imported, "
        f"nothing loaded): {floor / MIB:.0f} MiB.", "",
        *markdown_table(["run", "max_memory", "peak RSS (MiB)", "budget + import floor (MiB)",
                         "seconds", "pytest says", "verdict"], rows),
        "", END,
    ]


def run_memory_bench(settings: Settings, tests: str, cache: Path,
                     budget: int | None = None) -> str:
    runs, floor, float32 = measure(settings, tests, cache, budget)
    parity = load_settings(settings.root, [settings.root / tests / CONFIG_FILE])
    return "\n".join(section(runs, floor, float32, parity.models[0])) + "\n"


def replace_section(document: str, text: str) -> str:
    """``document`` with its memory section (between the markers) replaced by ``text``;
    appended when it has none."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        return document.rstrip("\n") + "\n\n" + text
    return document[:start] + text.rstrip("\n") + document[end + len(END):]

