"""`groundtruth bench`'s bookkeeping: what the floor must contain, how targets are judged.

The timings themselves are measured by running the bench (docs/benchmarks.md), never by
a test; these check what is measured and how it is reported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_groundtruth.config.prompts import load_prompts
from pytest_groundtruth.config.settings import load_settings
from pytest_groundtruth.lab.benchmark import (
    RunTiming,
    attainable_ratio,
    child_env,
    runs_section,
    targets_section,
    trivial_run,
)
from pytest_groundtruth.lab.floor import ArtifactFloor, Floor, work_of
from pytest_groundtruth.plugin.stats import (
    ProcessStats,
    peak_rss_bytes,
    read_process_stats,
    write_process_stats,
)
from pytest_groundtruth.suites.matrix import build_cases

ROOT = Path(__file__).parents[2]


def test_the_floor_holds_each_artifacts_unavoidable_work() -> None:
    settings = load_settings(ROOT, [ROOT / "tests" / "parity" / "groundtruth.toml"])
    prompts = [p.name for p in load_prompts(settings.path(settings.prompts_dir))]
    work, unknown = work_of(build_cases(settings, prompts))
    kinds = {(w.runtime, w.quant): w.kinds for w in work if w.model == "smollm2-135m"}
    # no piece of theirs (rescore: the reference scores the runtime's tokens): timed whole
    assert unknown == ("consistency", "lora", "paired", "rescore", "speculative")
    assert kinds[("llamacpp", "int4")] == {"generate", "perplexity", "score", "integrity",
                                           "roundtrip"}
    assert kinds[("llamacpp", "int8")] == {"generate", "perplexity", "score", "integrity"}
    assert "roundtrip" not in kinds[("torchao", "int4")]  # torchao exports no GGUF: skipped
    assert not any(runtime == "transformers" for runtime, _ in kinds)  # no int8/int4 there


def run(label: str, workers: int, seconds: float, **counts: int) -> RunTiming:
    stats = ProcessStats(pid=1, worker="main", runners_opened=counts.get("runners", 0),
                         results_made=counts.get("results", 0), artifacts_built=0,
                         largest_model_bytes=0, peak_rss_bytes=0, imported=())
    return RunTiming(label, workers, seconds, 0, "", (stats,))


def test_targets_are_judged_against_their_references() -> None:
    floor = Floor((("m", 10.0),), (ArtifactFloor("m", "r", "q", generate_s=80.0),), (),
                  suites=(("speculative", 10.0, 4, 0),))
    assert floor.total == 100.0  # suites timed whole count in the floor
    runs = {("cold", 0): run("cold", 0, 120.0), ("warm", 0): run("warm", 0, 5.0),
            ("cold", 2): run("cold", 2, 70.0), ("warm", 2): run("warm", 2, 4.0, results=1)}
    lines = "\n".join(targets_section(run("collect-only", 0, 2.0), runs, floor, 2.5, [0, 2]))
    assert "| warm re-run -n 0 / collect-only | 2.50 | - | <= 3.0 | met |" in lines
    assert "| cold -n 0 / floor | 1.20 | - | <= 1.3 | met |" in lines
    assert "| cold -n 2 / cold -n 0 | 0.58 | - | <= 0.65 | met |" in lines
    assert "| warm -n 2 / warm -n 0 | 0.80 | - | <= 0.65 | MISSED |" in lines
    assert "| peak RSS / largest model held (worst process) | 2.50 | - | <= 2.0 | MISSED |" in lines
    assert "(runners + results + builds) | 1 | - | = 0 | MISSED |" in lines


def test_the_xdist_floor_bounds_the_attainable_worker_ratio() -> None:
    # warm -n 0 of 4.0 s; a one-test project takes 0.6 s at -n 0 and 1.2 s at -n 2;
    # collect-only 1.6 s: 1.0 s of collection each worker repeats, 2.4 s left to split.
    assert attainable_ratio(4.0, 0.6, 1.2, 1.6, 2) == pytest.approx((1.2 + 1.0 + 1.2) / 4.0)
    # no fixed costs and nothing to collect: perfect halving
    assert attainable_ratio(10.0, 0.0, 0.0, 0.0, 2) == pytest.approx(0.5)
    floor = Floor((("m", 10.0),), (), ())
    runs = {("cold", 0): run("cold", 0, 100.0), ("warm", 0): run("warm", 0, 4.0),
            ("cold", 2): run("cold", 2, 60.0), ("warm", 2): run("warm", 2, 3.92)}
    trivial = {0: run("trivial", 0, 0.6), 2: run("trivial", 2, 1.2)}
    lines = "\n".join(targets_section(run("collect-only", 0, 1.6), runs, floor, 1.5, [0, 2],
                                      trivial))
    assert "| warm -n 2 / warm -n 0 | 0.98 | 0.85 | <= 0.65 | MISSED |" in lines
    assert "| cold -n 2 / cold -n 0 | 0.60 | 0.51 | <= 0.65 | met |" in lines
    assert "T0 = 0.60 s and T2 = 1.20 s" in lines
    section = "\n".join(runs_section(run("collect-only", 0, 1.6), runs, floor, trivial))
    assert "| one-test project (pytest + xdist floor) | 2 | 1.20 |" in section


@pytest.mark.slow
def test_the_one_test_project_runs_with_and_without_workers(tmp_path: Path) -> None:
    for n in (0, 2):
        found = trivial_run(n, tmp_path / "cache")
        assert found.returncode == 0, found.summary
        assert "1 passed" in found.summary


def test_process_stats_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "stats.jsonl"
    monkeypatch.setenv("GROUNDTRUTH_STATS", str(target))
    write_process_stats([])
    write_process_stats([])
    found = read_process_stats(target)
    assert [s.pid for s in found] == [os.getpid()] * 2
    assert found[0].runners_opened == 0
    assert json.loads(target.read_text().splitlines()[0])["worker"] in ("main", "gw0", "gw1")


def test_peak_memory_is_this_programs_own(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 999999 kB\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n")
    assert peak_rss_bytes(status) == 2048 * 1024
    assert peak_rss_bytes(tmp_path / "absent") > 0  # getrusage where /proc is not there


def test_bench_children_write_bytecode_and_report(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = child_env(tmp_path / "cache", tmp_path / "stats")
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["GROUNDTRUTH_CACHE_DIR"] == str(tmp_path / "cache")
    assert env["GROUNDTRUTH_STATS"] == str(tmp_path / "stats")


def test_phase_peaks_are_judged_against_the_budget() -> None:
    from pytest_groundtruth.lab.benchmark import phase_memory_section

    mib = 2**20
    floor = Floor((), (ArtifactFloor("m", "r", "q", peaks=(("load", 900 * mib),
                                                            ("integrity", 1200 * mib))),), (),
                  peaks=(("m oracle check (the float32 reference)", 700 * mib),))
    lines = "\n".join(phase_memory_section(floor, 1000 * mib))
    assert "| m r q | load | 900 | 0.90 | within |" in lines
    assert "| m r q | integrity | 1200 | 1.20 | OVER |" in lines
    assert "| m oracle check (the float32 reference) | whole | 700 | 0.70 | within |" in lines
    assert phase_memory_section(Floor((), (), ()), mib) == []


def test_the_memory_section_judges_outcomes_and_peak() -> None:
    from pytest_groundtruth.lab.memory_bench import (
        BEGIN,
        END,
        Floor,
        MemoryRun,
        replace_section,
        section,
    )
    from pytest_groundtruth.plugin.stats import PhasePeak

    mib = 2**20

    def timing(peak: int, summary: str, anon: int = 0) -> RunTiming:
        stats = ProcessStats(1, "main", 1, 1, 0, 0, peak * mib, ("torch",),
                             (PhasePeak("t.toml::rescore[x]", peak * mib, anon * mib),),
                             anon * mib)
        return RunTiming("x", 0, 10.0, 0, summary, (stats,))

    same = "30 passed, 2 xfailed in 10.00s"
    floor = Floor(300 * mib, 250 * mib)
    runs = [MemoryRun("default budget", None, timing(1100, same, 900)),
            MemoryRun("budget", 384 * mib, timing(650, same, 600))]
    lines = "\n".join(section(runs, floor, 513 * mib, "m"))
    assert ("| budget | 384 MiB | 650 | 684 | met | 600 | 634 | met | 10 | "
            "30 passed, 2 xfailed in 10.00s |") in lines
    assert "| rescore[x] | 650 | 600 | 1100 | 900 |" in lines  # each phase, both runs
    over = [runs[0], MemoryRun("budget", 384 * mib, timing(700, "29 passed, 1 failed", 700))]
    assert "MISSED (over) (outcomes differ)" in "\n".join(section(over, floor, 0, "m"))
    # resident over (mapped weight files), anonymous within: judged apart
    mapped = [runs[0], MemoryRun("budget", 384 * mib, timing(800, same, 500))]
    assert "| MISSED (over) | 500 | 634 | met |" in "\n".join(section(mapped, floor, 0, "m"))
    text = "\n".join(section(runs, floor, 513 * mib, "m")) + "\n"
    document = f"# Bench\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    replaced = replace_section(document, text)
    assert "old" not in replaced
    assert replaced.startswith("# Bench\n\nbefore\n\n")
    assert replaced.endswith("\n\nafter\n")
    assert replace_section("# Bench\n", text) == "# Bench\n\n" + text


def test_the_phase_meter_sees_each_tests_own_peak_of_c_memory() -> None:
    """Per test: the resident high-water mark is reset when the test begins, and the
    anonymous peak is sampled, C allocations included (numpy's buffer here)."""
    import time

    import numpy as np

    from pytest_groundtruth.plugin.stats import PhaseMeter

    meter = PhaseMeter()
    if not meter.enabled:
        pytest.skip("needs Linux's /proc/self/status RssAnon and /proc/self/clear_refs")
    mib = 2**20
    try:
        meter.begin()
        block = np.ones(200 * mib // 8)  # 200 MiB written: resident and anonymous
        time.sleep(0.05)  # a few samples while it is held
        del block
        meter.end("big")
        meter.begin()
        meter.end("small")
    finally:
        meter.stop()
    big, small = meter.phases
    assert big.anon_bytes - small.anon_bytes >= 150 * mib
    assert big.rss_bytes - small.rss_bytes >= 150 * mib  # the mark was reset between
    assert meter.peak_rss >= big.rss_bytes
    assert meter.peak_anon >= big.anon_bytes


def test_process_stats_keep_the_phases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_groundtruth.plugin.stats import PhaseMeter

    target = tmp_path / "stats.jsonl"
    monkeypatch.setenv("GROUNDTRUTH_STATS", str(target))
    meter = PhaseMeter()
    meter.begin()
    meter.end("a::b")
    write_process_stats([], meter=meter)
    (found,) = read_process_stats(target)
    if meter.enabled:
        assert [p.test for p in found.phases] == ["a::b"]
        assert found.peak_rss_bytes >= found.phases[0].rss_bytes > 0


def test_a_difference_between_results_is_named_by_its_path() -> None:
    from pytest_groundtruth.lab.benchmark import first_difference

    a = {"result": {"details": {"gates": [{"detail": "built"}, {"detail": "ok"}]}}}
    b = {"result": {"details": {"gates": [{"detail": "fetched"}, {"detail": "ok"}]}}}
    assert first_difference(a, b) == "result.details.gates[0].detail: 'built' != 'fetched'"
    assert first_difference({"x": 1}, {"x": 1, "y": 2}) == "y: 'None' != '2'"
