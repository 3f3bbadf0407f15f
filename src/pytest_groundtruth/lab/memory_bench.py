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
from pytest_groundtruth.lab.benchmark import RunTiming, pytest_run, replace_between
from pytest_groundtruth.models.sources import resolve
from pytest_groundtruth.plugin.collection import CONFIG_FILE
from pytest_groundtruth.plugin.stats import PhasePeak

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

    @property
    def peak_anon(self) -> int:
        """The sampled peak of anonymous memory (what the kernel cannot reclaim)."""
        return max((s.peak_anon_bytes for s in self.run.stats), default=0)

    @property
    def phases(self) -> list[PhasePeak]:
        return [p for s in self.run.stats for p in s.phases]


def selection(slug: str, quant: str | None = None) -> str:
    """``-k``: the suites' tests of ``slug`` (of its ``quant`` artifacts only, when
    given) and its own oracle drift check (not that of a model whose name starts with
    it)."""
    only = f" and {quant}" if quant else ""
    return f"(({SUITES}) and {slug}{only}) or (oracle_drift and {slug}])"


@dataclass(frozen=True)
class Floor:
    """What a process that imports pytest, the plugin and the engines holds, nothing
    loaded: its peak resident memory and its anonymous memory."""

    rss: int
    anon: int


def import_floor(modules: tuple[str, ...]) -> Floor:
    """The floor of a process that imports pytest, the plugin and ``modules`` (the
    engines a run imported) and does nothing else."""
    names = ["pytest", "pytest_groundtruth.plugin", *modules]
    code = (f"import {', '.join(names)}\n"
            "from pytest_groundtruth.core.budget import peak_bytes\n"
            "from pytest_groundtruth.plugin.stats import _status_kib\n"
            "print(peak_bytes(), _status_kib('RssAnon') or 0)\n")
    proc = process.invoke([sys.executable, "-c", code], None, tool="python (import floor)")
    rss, anon = proc.stdout.split()[-2:]
    return Floor(int(rss), int(anon))


def measure(settings: Settings, tests: str, cache: Path, budget: int | None = None,
            quant: str | None = None) -> tuple[list[MemoryRun], Floor, int]:
    """The three runs (see the module doc), the import floor and the float32 size."""
    root = settings.root
    parity = load_settings(root, [root / tests / CONFIG_FILE])
    model = resolve(parity.spec(parity.models[0]), cache, root, parity.roster)
    float32 = weights_bytes(model.path)
    budget = budget or int(float32 * BUDGET_SHARE) // MIB * MIB
    select = ["-k", selection(model.slug, quant), f"--gt-runtime={RUNTIME}",
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


def _verdict(same: bool, within: bool, ran: bool) -> str:
    return ("met" if same and within and ran else
            "MISSED" + ("" if within else " (over)") + ("" if same else " (outcomes differ)")
            + ("" if ran else " (failed)"))


def _short(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def section(runs: list[MemoryRun], floor: Floor, float32: int, slug: str,
            quant: str | None = None) -> list[str]:
    rows = []
    outcomes = {r.label: r.run.summary.split(" in ")[0] for r in runs}
    for r in runs:
        limit = "-" if r.budget is None else format_size(r.budget)
        bound = "-" if r.budget is None else f"{(r.budget + floor.rss) / MIB:.0f}"
        anon_bound = "-" if r.budget is None else f"{(r.budget + floor.anon) / MIB:.0f}"
        verdict = anon_verdict = "-"
        if r.budget is not None:
            same = outcomes[r.label] == outcomes.get("default budget")
            ran = r.run.returncode == 0
            verdict = _verdict(same, r.peak <= r.budget + floor.rss, ran)
            anon_verdict = _verdict(same, r.peak_anon <= r.budget + floor.anon, ran)
        rows.append([r.label, limit, f"{r.peak / MIB:.0f}", bound, verdict,
                     f"{r.peak_anon / MIB:.0f}", anon_bound, anon_verdict,
                     f"{r.run.seconds:.0f}", r.run.summary])
    out = [
        BEGIN, "",
        f"### Memory budget ({slug}: {float32 / MIB:.0f} MiB of float32 weights)", "",
        f"`pytest tests/parity -k \"{selection(slug, quant)}\" --gt-runtime={RUNTIME} -n 0` "
        "in a warm "
        "artifact cache with no results: the oracle drift check regenerates the oracles, "
        "rescore and agreement score with the float32 reference. With `--gt-max-memory` "
        "below the float32 size the reference is loaded with accelerate's disk offload "
        "(docs/memory.md). Import floor (pytest, the plugin and the engines imported, "
        f"nothing loaded): {floor.rss / MIB:.0f} MiB resident, {floor.anon / MIB:.0f} MiB "
        "anonymous. Resident memory counts the pages of the weight files the engines map "
        "(llama.cpp's GGUF, the safetensors accelerate reads), which the kernel reclaims "
        "under pressure and reads again; anonymous memory (sampled every 5 ms) is what it "
        "cannot.", "",
        *markdown_table(["run", "max_memory", "peak RSS (MiB)", "budget + floor (MiB)",
                         "verdict (RSS)", "peak anonymous (MiB)",
                         "budget + anonymous floor (MiB)", "verdict (anonymous)",
                         "seconds", "pytest says"], rows),
    ]
    budgeted = [r for r in runs if r.budget is not None]
    by_label = {r.label: {p.test: p for p in r.phases} for r in runs}
    if budgeted and budgeted[-1].phases:
        unbudgeted = by_label.get("default budget", {})
        table = []
        for p in budgeted[-1].phases:
            other = unbudgeted.get(p.test)
            table.append([_short(p.test), f"{p.rss_bytes / MIB:.0f}",
                          f"{p.anon_bytes / MIB:.0f}",
                          "-" if other is None else f"{other.rss_bytes / MIB:.0f}",
                          "-" if other is None else f"{other.anon_bytes / MIB:.0f}"])
        out += ["", "Peak per phase (each test, in the order run; a test's peak includes "
                "what the process held when it began):", "",
                *markdown_table(["test", "budget: RSS (MiB)", "budget: anonymous (MiB)",
                                 "default: RSS (MiB)", "default: anonymous (MiB)"], table)]
    return [*out, "", END]


def run_memory_bench(settings: Settings, tests: str, cache: Path,
                     budget: int | None = None, quant: str | None = None) -> str:
    runs, floor, float32 = measure(settings, tests, cache, budget, quant)
    parity = load_settings(settings.root, [settings.root / tests / CONFIG_FILE])
    return "\n".join(section(runs, floor, float32, parity.models[0], quant)) + "\n"


def replace_section(document: str, text: str) -> str:
    """``document`` with its memory section (between the markers) replaced by ``text``;
    appended when it has none."""
    return replace_between(document, text, BEGIN, END)
