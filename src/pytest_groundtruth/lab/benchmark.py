"""``groundtruth bench``: how far a parity run is from the engines' own floor.

A benchmark to rerun, not a timed test: it measures on whatever machine runs it and
prints markdown (``--write docs/benchmarks.md``). In a fresh cache directory each time:

* the floor (:mod:`~pytest_groundtruth.lab.floor`): the engine work the run cannot
  avoid, each piece measured alone in this process;
* ``pytest --collect-only`` of the parity tests (best of ``repeat``);
* pytest-xdist's own floor: a one-test project run with each worker count in the same
  environment (best of ``repeat``), the fixed cost of starting pytest and its workers
  that no plugin can remove; from it, the best ``-n 2 / -n 0`` ratio a run could reach
  (:func:`attainable_ratio`), printed beside the measured one;
* the parity run (``pytest tests/parity``) per worker count (``-n 0``, ``-n 2``): cold
  (empty cache) once, then warm (unchanged re-run, best of ``repeat``), each in a
  subprocess with ``GROUNDTRUTH_STATS`` set, so each pytest process reports its engine
  work (runners opened, results made, artifacts built) and peak memory;
* the ratios the targets are stated in (docs/benchmarks.md);
* the peak resident memory of each piece of the floor against the memory budget (each
  piece's peak read alone: :class:`~pytest_groundtruth.lab.floor.Peaks`);
* with ``--shards N``: the parity run cold and unsharded (``-n 1``), then as N shards
  started together (``--gt-shard K/N``, ``-n 1`` each, a shared ``cache_url``), merged
  (``groundtruth merge``) and compared with the unsharded results
  (:func:`measure_shards`);
* torchao's int4 paths on CPU (:mod:`~pytest_groundtruth.lab.torchao_cpu`), which
  docs/speed.md explains.

The children run with ``PYTHONDONTWRITEBYTECODE`` removed from the environment: a
user's second run reads the bytecode (and pytest's assertion rewrites) its first run
wrote; with it set, every run recompiles every module, seconds of a warm run.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_groundtruth.config.prompts import load_prompts
from pytest_groundtruth.config.settings import Settings, load_settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core import process
from pytest_groundtruth.core.budget import format_size
from pytest_groundtruth.core.machine import cpu_kernel_family
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.core.tables import markdown_table
from pytest_groundtruth.ggufio import hfconvert
from pytest_groundtruth.lab import merge
from pytest_groundtruth.lab.floor import Floor, measure_floor
from pytest_groundtruth.lab.torchao_cpu import compare_paths
from pytest_groundtruth.plugin.collection import CONFIG_FILE
from pytest_groundtruth.plugin.stats import ENV as STATS_ENV
from pytest_groundtruth.plugin.stats import ProcessStats, read_process_stats
from pytest_groundtruth.report import results_json
from pytest_groundtruth.runtimes.threads import cpu_count
from pytest_groundtruth.suites.matrix import build_cases

MIB = 2**20
# (what, measured / reference, at most)
TARGETS = {
    "warm": 3.0,  # an unchanged re-run against `pytest --collect-only`
    "cold": 1.3,  # a cold run with -n 0 against the floor
    "workers": 0.65,  # -n 2 against -n 0, cold and warm
    "memory": 2.0,  # peak RSS of one pytest process against the largest model it holds
}


@dataclass(frozen=True)
class RunTiming:
    label: str  # "collect-only", "cold", "warm"
    workers: int
    seconds: float
    returncode: int
    summary: str  # pytest's last line
    stats: tuple[ProcessStats, ...]

    def total(self, field: str) -> int:
        return sum(int(getattr(s, field)) for s in self.stats)


def child_env(cache: Path, stats: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["GROUNDTRUTH_CACHE_DIR"] = str(cache)  # the plugin's and the project's fixtures' cache
    # The converter's source is a download, not a build: the cold caches keep the user's
    # sdist (else every paired test skips, "convert_hf_to_gguf.py is not at hand").
    sdist = hfconvert.sdist_path()
    if sdist is not None and sdist.is_file():
        env.setdefault(hfconvert.SDIST_ENV, str(sdist))
    env[STATS_ENV] = str(stats)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    return env


def pytest_run(root: Path, tests: str, cache: Path, workers: int, label: str,
               extra: Sequence[str] = ()) -> RunTiming:
    """One ``pytest`` subprocess; its wall time, exit code, last line and process stats."""
    with tempfile.TemporaryDirectory(prefix="gt-stats-") as scratch:
        stats = Path(scratch) / "stats.jsonl"
        cmd = [sys.executable, "-m", "pytest", tests, "-q", "-p", "no:cacheprovider",
               "-n", str(workers), *extra]
        start = time.perf_counter()
        proc = process.invoke(cmd, None, tool="pytest", cwd=root,
                              environ=child_env(cache, stats))
        seconds = time.perf_counter() - start
        found = tuple(read_process_stats(stats))
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return RunTiming(label, workers, seconds, proc.returncode, lines[-1] if lines else "",
                     found)


def pytest_runs(root: Path, tests: str,
                runs: Sequence[tuple[Path, int, str, Sequence[str]]],
                cpus: Sequence[frozenset[int] | None] = ()) -> list[RunTiming]:
    """``pytest`` subprocesses started together, one per ``(cache, workers, label,
    extra)``, the i-th on the CPUs ``cpus[i]`` (its affinity, set as soon as it has
    started, long before it imports an engine; None or none given: all); each one's
    wall time from the common start to its own end."""
    with tempfile.TemporaryDirectory(prefix="gt-stats-") as scratch:
        procs = []
        start = time.perf_counter()
        for i, (cache, workers, _, extra) in enumerate(runs):
            stats, log = Path(scratch) / f"stats-{i}.jsonl", Path(scratch) / f"out-{i}.txt"
            cmd = [sys.executable, "-m", "pytest", tests, "-q", "-p", "no:cacheprovider",
                   "-n", str(workers), *extra]
            with log.open("wb") as fh:
                child = process.spawn(cmd, log=fh, environ=child_env(cache, stats), cwd=root)
            mask = cpus[i] if i < len(cpus) else None
            if mask:
                os.sched_setaffinity(child.pid, mask)
            procs.append(child)
        ends: dict[int, float] = {}
        while len(ends) < len(procs):
            for i, child in enumerate(procs):
                if i not in ends and child.poll() is not None:
                    ends[i] = time.perf_counter() - start
            time.sleep(0.05)
        out = []
        for i, (child, (_, workers, label, _)) in enumerate(zip(procs, runs, strict=True)):
            text = (Path(scratch) / f"out-{i}.txt").read_text(errors="replace")
            lines = [line for line in text.splitlines() if line.strip()]
            out.append(RunTiming(label, workers, ends[i], int(child.returncode),
                                 lines[-1] if lines else "",
                                 tuple(read_process_stats(Path(scratch) / f"stats-{i}.jsonl"))))
    return out


def cpu_shares(count: int) -> list[frozenset[int] | None]:
    """The CPUs of this process dealt out to ``count`` processes (round robin), as
    ``count`` machines would each have their own; all None where there are fewer CPUs
    than processes or no affinity to set."""
    if not hasattr(os, "sched_getaffinity"):
        return [None] * count
    available = sorted(os.sched_getaffinity(0))
    if len(available) < count:
        return [None] * count
    return [frozenset(available[k::count]) for k in range(count)]


TRIVIAL_TEST = "def test_one() -> None:\n    assert 1 + 1 == 2\n"


def trivial_run(workers: int, cache: Path) -> RunTiming:
    """``pytest -n workers`` of a one-test project (no configuration, nothing to collect
    but one function) in this environment: the wall time pytest and xdist take before and
    after any test, every installed plugin (this one included) loaded as usual."""
    with tempfile.TemporaryDirectory(prefix="gt-trivial-") as project:
        (Path(project) / "test_one.py").write_text(TRIVIAL_TEST)
        return pytest_run(Path(project), "test_one.py", cache, workers, "trivial")


def attainable_ratio(run_lo: float, lo_floor: float, hi_floor: float, collect: float,
                     workers: int) -> float:
    """The smallest ``-n hi / -n lo`` wall-time ratio a run of ``run_lo`` seconds at
    ``-n lo`` could reach with ``workers`` workers, given the fixed costs measured on a
    one-test project (``lo_floor``, ``hi_floor``) and the ``--collect-only`` time:
    the work beyond ``lo_floor`` splits perfectly over the workers, except collection,
    which every xdist worker does whole (``collect - lo_floor``)."""
    collection = max(0.0, collect - lo_floor)
    rest = max(0.0, run_lo - lo_floor - collection)
    return (hi_floor + collection + rest / max(workers, 1)) / run_lo


def best(runs: Sequence[RunTiming]) -> RunTiming:
    return min(runs, key=lambda r: r.seconds)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_lines(settings: Settings) -> list[str]:
    cpu = cpu_kernel_family()
    versions = ", ".join(f"{n} {package_version(n)}" for n in
                         ("torch", "transformers", "torchao", "llama-cpp-python", "pytest-xdist"))
    return [
        f"Machine: {platform.machine()}, {cpu['vendor']} {cpu['model']}, {cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {versions}.",
    ]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def floor_section(floor: Floor) -> list[str]:
    rows = [[slug, "source -> float32 directory", f"{s:.1f}", ""] for slug, s in floor.sources]
    for a in floor.artifacts:
        name = f"{a.model} {a.runtime} {a.quant}"
        if a.skipped:
            rows.append([name, "skipped", "-", a.skipped[:80]])
            continue
        parts = [("convert", a.convert_s), ("load", a.load_s), ("generate", a.generate_s),
                 ("score (perplexity, teacher forcing)", a.score_s),
                 ("integrity", a.integrity_s), ("roundtrip (export, reimport, generate)",
                                                a.roundtrip_s)]
        for what, seconds in parts:
            if seconds:
                note = (f"{a.tokens} tokens, {a.tokens_per_s:.0f} tok/s"
                        if what == "generate" else "")
                rows.append([name, what, f"{seconds:.1f}", note])
    rows += [[suite, "its cases run whole (suite's own run)", f"{s:.1f}",
              f"{ran} cases" + (f", {failed} raised" if failed else "")]
             for suite, s, ran, failed in floor.suites]
    rows += [[slug, "oracle check (regenerate)", f"{s:.1f}", ""]
             for slug, s in floor.oracle_checks]
    rows.append(["**floor**", "sum", f"**{floor.total:.1f}**", ""])
    out = ["### The floor: engine work a cold run cannot avoid", "",
           "Each piece measured alone, one after another in one process, in an empty cache "
           "(`pytest_groundtruth.lab.floor`).", ""]
    out += markdown_table(["model / artifact", "work", "seconds", "note"], rows)
    if floor.unknown_suites:
        out += ["", "Not in the floor (suites whose engine work it does not know): "
                + ", ".join(floor.unknown_suites) + "."]
    return out


def phase_memory_section(floor: Floor, budget: int) -> list[str]:
    """Each piece of the floor's peak resident memory against this process's budget."""
    rows = []
    for a in floor.artifacts:
        for phase, peak in a.peaks:
            rows.append([f"{a.model} {a.runtime} {a.quant}", phase, f"{peak / MIB:.0f}",
                         f"{peak / budget:.2f}", "within" if peak <= budget else "OVER"])
    for what, peak in floor.peaks:
        rows.append([what, "whole", f"{peak / MIB:.0f}", f"{peak / budget:.2f}",
                     "within" if peak <= budget else "OVER"])
    if not rows:
        return []
    return ["### Peak memory per phase (the floor's process)", "",
            f"Budget: {format_size(budget)} (max_memory, default: the machine's memory less "
            "a margin; docs/memory.md). Each phase's peak includes what the process held "
            "when it began (the imports, open runners).", "",
            *markdown_table(["model / artifact", "phase", "peak RSS (MiB)", "/ budget",
                             "verdict"], rows)]


def runs_section(collect: RunTiming, runs: dict[tuple[str, int], RunTiming],
                 floor: Floor, trivial: dict[int, RunTiming] | None = None) -> list[str]:
    rows = [["collect-only", "-", f"{collect.seconds:.1f}", "-", "-", "-", "-",
             collect.summary]]
    for n, run in sorted((trivial or {}).items()):
        rows.append(["one-test project (pytest + xdist floor)", str(n), f"{run.seconds:.2f}",
                     "-", "-", "-", "-", run.summary])
    for (label, workers), run in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        against = (f"{ratio(run.seconds, floor.total)} x floor" if label == "cold"
                   else f"{ratio(run.seconds, collect.seconds)} x collect")
        rows.append([label, str(workers), f"{run.seconds:.1f}", against,
                     str(run.total("runners_opened")), str(run.total("results_made")),
                     str(run.total("artifacts_built")), run.summary])
    header = ["cache", "-n", "seconds", "ratio", "runners opened", "results made",
              "artifacts built", "pytest says"]
    return ["### Parity runs (`pytest tests/parity`)", "", *markdown_table(header, rows)]


def memory_section(runs: dict[tuple[str, int], RunTiming]) -> tuple[list[str], float]:
    rows, worst = [], 0.0
    for (label, workers), run in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if label != "cold":
            continue
        for s in run.stats:
            held = s.largest_model_bytes
            r = s.peak_rss_bytes / held if held else 0.0
            worst = max(worst, r)
            rows.append([f"-n {workers}", s.worker, f"{s.peak_rss_bytes / MIB:.0f}",
                         f"{held / MIB:.0f}" if held else "-", f"{r:.2f}" if held else "-",
                         ", ".join(s.imported) or "-"])
    out = ["### Peak memory per process (cold runs)", "",
           "Largest model held: the on-disk weights of the largest artifact the process "
           "loaded (float32 safetensors for transformers and torchao, the GGUF file for "
           "llama.cpp).", ""]
    out += markdown_table(["run", "process", "peak RSS (MiB)", "largest model (MiB)", "ratio",
                           "engines imported"], rows)
    return out, worst


def targets_section(collect: RunTiming, runs: dict[tuple[str, int], RunTiming], floor: Floor,
                    worst_memory: float, workers: Sequence[int],
                    trivial: dict[int, RunTiming] | None = None) -> list[str]:
    """The targets, each with its verdict; beside ``-n hi / -n lo``, the best ratio the
    one-test project's fixed costs leave attainable (:func:`attainable_ratio`)."""
    rows = []

    def add(what: str, value: float | None, limit: float, attainable: float | None = None
            ) -> None:
        best_cell = "-" if attainable is None else f"{attainable:.2f}"
        if value is None:
            rows.append([what, "-", best_cell, f"<= {limit}", "not measured"])
        else:
            rows.append([what, f"{value:.2f}", best_cell, f"<= {limit}",
                         "met" if value <= limit else "MISSED"])

    def seconds(label: str, n: int) -> float | None:
        run = runs.get((label, n))
        return run.seconds if run else None

    for n in workers:
        warm = seconds("warm", n)
        add(f"warm re-run -n {n} / collect-only", warm / collect.seconds if warm else None,
            TARGETS["warm"])
    lo, hi = min(workers), max(workers)
    cold_lo = seconds("cold", lo)
    add(f"cold -n {lo} / floor", cold_lo / floor.total if cold_lo else None, TARGETS["cold"])
    if hi != lo:
        floors = trivial or {}
        for label in ("cold", "warm"):
            a, b = seconds(label, hi), seconds(label, lo)
            attainable = (attainable_ratio(b, floors[lo].seconds, floors[hi].seconds,
                                           collect.seconds, hi)
                          if b and lo in floors and hi in floors else None)
            add(f"{label} -n {hi} / {label} -n {lo}", a / b if a and b else None,
                TARGETS["workers"], attainable)
    add("peak RSS / largest model held (worst process)", worst_memory or None, TARGETS["memory"])
    engine_work = sum(r.total("runners_opened") + r.total("results_made")
                      + r.total("artifacts_built") for (lb, _), r in runs.items() if lb == "warm")
    rows.append(["engine work in warm re-runs (runners + results + builds)", str(engine_work),
                 "-", "= 0", "met" if engine_work == 0 else "MISSED"])
    header = ["target", "measured", "best attainable", "bound", "verdict"]
    out = ["### Targets (issue 13)", "", *markdown_table(header, rows)]
    if trivial and lo in trivial and hi in trivial:
        out += ["", f"Best attainable -n {hi} / -n {lo}: (T{hi} + C + (R - T{lo} - C) / {hi}) / R, "
                f"where R is the run at -n {lo}, T{lo} = {trivial[lo].seconds:.2f} s and "
                f"T{hi} = {trivial[hi].seconds:.2f} s the one-test project at -n {lo} and -n {hi} "
                f"(pytest's and xdist's fixed costs), and C = collect-only - T{lo} = "
                f"{max(0.0, collect.seconds - trivial[lo].seconds):.2f} s the collection every "
                f"worker repeats; the rest is assumed to split perfectly over {hi} workers."]
    return out


SHARD_TARGET = 0.6  # the slowest of 2 shards against the unsharded run (issue 25)


@dataclass(frozen=True)
class ShardBench:
    whole: RunTiming  # the unsharded cold run
    shards: tuple[RunTiming, ...]  # the shards, started together, cold
    identical: bool  # the merged results equal the unsharded run's (comparable())
    differing: tuple[str, ...]  # the node ids whose results differ (the first few)
    loads: tuple[str, ...]  # how many parity tests each shard ran
    cpus: tuple[str, ...]  # the CPUs each shard ran on ("all": shared); the unsharded
    # run ran on the first shard's
    select: str | None = None  # the -k subset every run ran, None: the whole matrix


def measure_shards(root: Path, tests: str, count: int, scratch: Path, workers: int = 1,
                   select: str | None = None) -> ShardBench:
    """The parity tests cold and unsharded (``-n workers``, ``--gt-results``), then as
    ``count`` shards started together (``-n workers`` each, each its own empty local
    cache, one shared ``cache_url`` folder, balanced by the unsharded run's timings), the
    shards merged and compared with the unsharded results.

    Each shard stands for one CI machine: it runs on its own share of the CPUs
    (:func:`cpu_shares`). The unsharded run stands for one such machine too, so it runs
    on the first share: "N machines against one machine of the same size". (On all the
    CPUs it would be one machine N times the size of each shard's, against which N
    shards can at best tie.) ``select``: a ``-k`` expression for every run (a subset,
    to check the bench end to end quickly)."""
    keyword = ["-k", select] if select else []
    shares = cpu_shares(count)
    whole_json = scratch / "whole.json"
    (whole,) = pytest_runs(root, tests, [(scratch / "whole", workers, "unsharded",
                                          [f"--gt-results={whole_json}", *keyword])],
                           shares[:1])
    shared = scratch / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    runs = [(scratch / f"shard{k}", workers, f"shard {k}/{count}",
             [f"--gt-shard={k}/{count}", f"--gt-shard-timings={whole_json}",
              f"--gt-cache-url=file://{shared}", f"--gt-results={scratch / f'shard{k}.json'}",
              "-rN", *keyword])
            for k in range(1, count + 1)]
    shards = tuple(pytest_runs(root, tests, runs, shares))
    merged_json = scratch / "merged.json"
    results_json.write(merged_json, merge.merge([scratch / f"shard{k}.json"
                                                 for k in range(1, count + 1)]))
    a = results_json.comparable(json.loads(whole_json.read_text()))
    b = results_json.comparable(json.loads(merged_json.read_text()))
    by_id = {r["nodeid"]: r for r in b["results"]}
    differing = tuple(f"{r['nodeid']}: {first_difference(r, by_id.get(r['nodeid']))}"
                      for r in a["results"] if by_id.get(r["nodeid"]) != r)
    loads = []
    for k in range(1, count + 1):
        run = results_json.read(scratch / f"shard{k}.json")
        loads.append(f"{len(run.records)} parity tests")
    return ShardBench(whole, shards, a == b, differing[:5], tuple(loads),
                      tuple(",".join(map(str, sorted(c))) if c else "all" for c in shares),
                      select)


SHARDS_BEGIN = "<!-- groundtruth bench --shards -->"
SHARDS_END = "<!-- end of groundtruth bench --shards -->"


def replace_between(document: str, text: str, begin: str, end: str) -> str:
    """``document`` with the section between the markers ``begin`` and ``end`` replaced
    by ``text`` (which carries the markers); appended when it has none."""
    start, stop = document.find(begin), document.find(end)
    if start < 0 or stop < start:
        return document.rstrip("\n") + "\n\n" + text
    return document[:start] + text.rstrip("\n") + document[stop + len(end):]


def first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two JSON values first differ: ``path: a != b`` (values cut at 80 characters),
    so a bench that finds results differ says what differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return f"{path.lstrip('.') or 'the record'}: {str(a)[:80]!r} != {str(b)[:80]!r}"


def shards_section(bench: ShardBench) -> list[str]:
    count = len(bench.shards)
    rows = [[f"unsharded (CPUs {bench.cpus[0]})", str(bench.whole.workers),
             f"{bench.whole.seconds:.1f}", "1.00", bench.whole.summary]]
    for run, load, cpus in zip(bench.shards, bench.loads, bench.cpus, strict=True):
        rows.append([f"{run.label} ({load}; CPUs {cpus})", str(run.workers),
                     f"{run.seconds:.1f}", ratio(run.seconds, bench.whole.seconds),
                     run.summary])
    slowest = max(r.seconds for r in bench.shards)
    worst = slowest / bench.whole.seconds if bench.whole.seconds else 0.0
    ran = bench.whole.returncode == 0 and all(r.returncode == 0 for r in bench.shards)
    if bench.select:
        verdict = "not judged: a subset"
    elif count != 2:
        verdict = f"not judged: the target is stated for 2 shards, {count} here"
    else:
        verdict = ("met" if worst <= SHARD_TARGET and bench.identical and ran else
                   "MISSED" + ("" if worst <= SHARD_TARGET else " (slower)")
                   + ("" if bench.identical else " (results differ)")
                   + ("" if ran else " (a run failed)"))
    subset = f" (only `-k \"{bench.select}\"`: a check of the bench, not a measurement)" \
        if bench.select else ""
    out = [SHARDS_BEGIN, "",
           f"### Shards (`--gt-shard K/{count}`, cold, started together on this machine)", "",
           f"The parity tests{subset} cold and unsharded on one share of the CPUs, then as "
           f"{count} shards started at once, each on its own share (as on its own machine: "
           "the engines' threads follow the affinity; the unsharded run is one such "
           "machine), with its own empty local cache "
           "and one shared `cache_url` (`file://`), balanced by the unsharded run's "
           "timings (`--gt-shard-timings`); the shards' results merged with "
           "`groundtruth merge`.", ""]
    out += markdown_table(["run", "-n", "seconds", "ratio to unsharded", "pytest says"], rows)
    same = ("identical" if bench.identical else
            "DIFFERENT (" + "; ".join(bench.differing) + ")")
    out += ["", f"Merged results against the unsharded run's (without timings and cache "
            f"paths, `results_json.comparable`): {same}.",
            f"Slowest shard / unsharded: {worst:.2f} (target <= {SHARD_TARGET} for 2 shards: "
            f"{verdict}).", "", SHARDS_END]
    return out


def torchao_section(settings: Settings, cache: Path) -> list[str]:
    model = settings.models[0]
    out = [f"### torchao int4 on CPU ({model}, the prompts, greedy)", ""]
    ctx = Context.open(settings, cache, max_open_runners=1)
    try:
        reason = ctx.engines.runtime("torchao").unavailable()
        if reason:
            return [*out, f"Not measured: {reason}."]
        rows = compare_paths(ctx, model)
    finally:
        ctx.close()
    table = [[r.path, f"{r.tokens_per_s:.1f}", " ".join(str(m) for m in r.mismatches),
              "-" if r.same_as_runtime is None else ("yes" if r.same_as_runtime else "no")]
             for r in rows]
    return [*out, *markdown_table(["path", "tok/s", "mismatches vs oracle (per prompt)",
                                   "tokens = the runtime's"], table)]


def run_shard_bench(settings: Settings, tests: str, shards: int,
                    select: str | None = None) -> str:
    """Only the shards' section (``groundtruth bench --shards-only``), with the load
    average around it."""
    started = load_average()
    with tempfile.TemporaryDirectory(prefix="gt-bench-shards-") as tmp:
        lines = shards_section(measure_shards(settings.root, tests, shards, Path(tmp),
                                              select=select))
    note = (f"Load average (1, 5, 15 min) at the start: {started}; at the end: "
            f"{load_average()}.")
    return "\n".join([*lines[:-1], note, "", lines[-1]]) + "\n"


def run_bench(settings: Settings, tests: str = "tests/parity", workers: Sequence[int] = (0, 2),
              repeat: int = 3, parity: bool = True, torchao: bool = True,
              shards: int = 0) -> str:
    root = settings.root
    parity_settings = load_settings(root, [root / tests / CONFIG_FILE])
    names = list(parity_settings.prompts) if parity_settings.prompts else None
    prompts = load_prompts(parity_settings.path(parity_settings.prompts_dir), names)
    cases = build_cases(parity_settings, [p.name for p in prompts],
                        [p.name for p in prompts if p.is_chat])
    oracle_root = parity_settings.path(parity_settings.oracle_dir)
    oracle_models = sorted(p.name for p in oracle_root.iterdir() if p.is_dir())
    started = load_average()
    out = [
        "<!-- generated by `groundtruth bench`; do not edit by hand -->",
        "",
        *machine_lines(settings),
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="gt-bench-") as tmp:
        floor = measure_floor(parity_settings, cases, oracle_models, Path(tmp) / "floor")
        out += floor_section(floor)
        phases = phase_memory_section(floor, parity_settings.memory_budget())
        out += ["", *phases] if phases else []
        if torchao:
            out += ["", *torchao_section(parity_settings, Path(tmp) / "floor")]
        if parity:
            collect = best([pytest_run(root, tests, Path(tmp) / "collect", 0, "collect-only",
                                       ["--collect-only"]) for _ in range(repeat)])
            trivial = {n: best([trivial_run(n, Path(tmp) / "trivial")
                                for _ in range(repeat)]) for n in workers}
            runs: dict[tuple[str, int], RunTiming] = {}
            for n in workers:
                cache = Path(tmp) / f"run-n{n}"
                runs[("cold", n)] = pytest_run(root, tests, cache, n, "cold")
                runs[("warm", n)] = best([pytest_run(root, tests, cache, n, "warm")
                                          for _ in range(repeat)])
            memory, worst = memory_section(runs)
            out += ["", *runs_section(collect, runs, floor, trivial), "", *memory, "",
                    *targets_section(collect, runs, floor, worst, workers, trivial)]
        if shards > 1:
            out += ["", *shards_section(measure_shards(root, tests, shards,
                                                       Path(tmp) / "shards")), ""]
    out += ["", f"Load average (1, 5, 15 min) at the start: {started}; at the end: "
            f"{load_average()}. Cold runs are single runs, warm runs and collect-only the "
            f"best of {repeat}; rerun `groundtruth bench --write docs/benchmarks.md` on an "
            "idle machine to compare."]
    return "\n".join(out) + "\n"
