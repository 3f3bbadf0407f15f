"""``groundtruth bench``: how far a parity run is from the engines' own floor.

A benchmark to rerun, not a timed test: it measures on whatever machine runs it and
prints markdown (``--write docs/benchmarks.md``). In a fresh cache directory each time:

* the floor (:mod:`~pytest_groundtruth.tools.floor`): the engine work the run cannot
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
* torchao's int4 paths on CPU (:mod:`~pytest_groundtruth.tools.torchao_cpu`), which
  docs/speed.md explains.

The children run with ``PYTHONDONTWRITEBYTECODE`` removed from the environment: a
user's second run reads the bytecode (and pytest's assertion rewrites) its first run
wrote; with it set, every run recompiles every module, seconds of a warm run.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.config.prompts import load_prompts
from pytest_groundtruth.config.settings import Settings, load_settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core import process
from pytest_groundtruth.core.machine import cpu_kernel_family
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.core.tables import markdown_table
from pytest_groundtruth.plugin.collection import CONFIG_FILE
from pytest_groundtruth.plugin.stats import ENV as STATS_ENV
from pytest_groundtruth.plugin.stats import ProcessStats, read_process_stats
from pytest_groundtruth.runtimes.threads import cpu_count
from pytest_groundtruth.suites.matrix import build_cases
from pytest_groundtruth.tools.floor import Floor, measure_floor
from pytest_groundtruth.tools.torchao_cpu import compare_paths

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
           "(`pytest_groundtruth.tools.floor`).", ""]
    out += markdown_table(["model / artifact", "work", "seconds", "note"], rows)
    if floor.unknown_suites:
        out += ["", "Not in the floor (suites whose engine work it does not know): "
                + ", ".join(floor.unknown_suites) + "."]
    return out


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


def run_bench(settings: Settings, tests: str = "tests/parity", workers: Sequence[int] = (0, 2),
              repeat: int = 3, parity: bool = True, torchao: bool = True) -> str:
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
    out += ["", f"Load average (1, 5, 15 min) at the start: {started}; at the end: "
            f"{load_average()}. Cold runs are single runs, warm runs and collect-only the "
            f"best of {repeat}; rerun `groundtruth bench --write docs/benchmarks.md` on an "
            "idle machine to compare."]
    return "\n".join(out) + "\n"
