"""``--gt-shard K/N``: the split (pure), the plugin's deselection, and ``groundtruth merge``.

The split: every test in exactly one shard, one xdist group (and the groups a pair case
joins) never across two, the same split whatever the order of the tests, balanced by
measured durations where an earlier run's results JSON has them. End to end (slow): a
small matrix run whole and as two shards (``-n 1`` each, their own local caches, one
shared ``cache_url``), the shards merged: the merged results JSON equals the whole run's
without what differs between any two runs (timings, the local cache's path:
``results_json.comparable``), and so do the ticket (but its date line), the terminal
matrix and the parity tests' JUnit entries (classname, name, result, groundtruth_outcome).
"""

from __future__ import annotations

import json
import os
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.cli.main import main
from pytest_groundtruth.lab.benchmark import cpu_shares
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.report import results_json
from pytest_groundtruth.suites.shards import (
    GROUP_SETUP_S,
    PER_TEST_S,
    Collected,
    Shard,
    ShardError,
    assign,
    split,
    units,
)

Project = Callable[..., pytest.Pytester]


def matrix() -> list[Collected]:
    tests = []
    for runtime in ("llamacpp", "torchao", "apr"):
        for quant in ("int8", "int4"):
            group = f"m-{runtime}-{quant}"
            tests += [Collected(f"t.toml::{s}[m-{runtime}-{quant}-{p}]", group)
                      for s in ("token", "canary") for p in ("a", "b")]
        tests.append(Collected(f"t.toml::drift[m-{runtime}-int4-int8]", f"m-{runtime}-int4",
                          (f"m-{runtime}-int8",)))
    tests += [Collected("t.toml::cuda[m-x-bf16]", "m-x-bf16@cuda", runs=False),
              Collected("test_drift.py::test_a", "tests:test_drift.py"),
              Collected("test_drift.py::test_b", "tests:test_drift.py")]
    return tests


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "1/0", "a/b", "1/2/3", "-1/2", " /2"])
def test_a_bad_shard_names_the_option_and_the_form(text: str) -> None:
    with pytest.raises(ShardError, match=r"--gt-shard .*K"):
        Shard.parse(text)


def test_every_test_lands_in_exactly_one_shard_with_its_groups() -> None:
    tests = matrix()
    for count in (1, 2, 3, 5):
        chosen = [split(tests, Shard(k, count)).selected for k in range(1, count + 1)]
        assert sorted(n for c in chosen for n in c) == sorted(t.nodeid for t in tests)
        shard_of = {n: k for k, c in enumerate(chosen) for n in c}
        for unit in units(tests).values():  # a unit never spans two shards
            assert len({shard_of[t.nodeid] for t in unit}) == 1
    # the pair case ties int8 to int4: one unit per runtime, plus the skipped GPU group
    # and the module of plain tests
    assert sorted(units(tests)) == ["m-apr-int4", "m-llamacpp-int4", "m-torchao-int4",
                                    "m-x-bf16@cuda", "tests:test_drift.py"]


def test_the_split_does_not_depend_on_the_order_of_collection() -> None:
    tests = matrix()
    first = [split(tests, Shard(k, 2)).selected for k in (1, 2)]
    shuffled = list(tests)
    random.Random(7).shuffle(shuffled)
    assert [split(shuffled, Shard(k, 2)).selected for k in (1, 2)] == first


def test_static_costs_and_skipped_groups() -> None:
    tests = matrix()
    loads = split(tests, Shard(1, 3)).loads
    # three runtimes, each 2 groups of 4 tests + the pair case: one unit of 9 tests
    runtime = GROUP_SETUP_S + 9 * PER_TEST_S
    plain = GROUP_SETUP_S + 2 * PER_TEST_S
    assert sorted(loads) == sorted([runtime + plain, runtime, runtime])
    assert split(tests, Shard(1, 3)).units == 5


def test_measured_durations_balance_the_shards() -> None:
    tests = [Collected(f"f::t[{g}-{i}]", g) for g in ("a", "b", "c", "d") for i in range(2)]
    seconds = {"a": 50.0, "b": 30.0, "c": 15.0, "d": 5.0}
    measured = {t.nodeid: seconds[t.group] / 2 for t in tests}
    # static: four equal units, two per shard; measured: a | b + c + d
    assert split(tests, Shard(1, 2)).loads == (2 * (GROUP_SETUP_S + 2 * PER_TEST_S),) * 2
    balanced = split(tests, Shard(1, 2), measured)
    assert balanced.loads == (50.0, 50.0)
    assert balanced.selected == {t.nodeid for t in tests if t.group == "a"}
    # a unit with a test the file does not know falls back to the static estimate
    partial = {k: v for k, v in measured.items() if k != "f::t[a-0]"}
    assert split(tests, Shard(1, 2), partial).loads == (30.0, 25.0)


def test_longest_first_with_ties_to_the_lower_shard() -> None:
    assert assign({"x": 1.0, "y": 1.0, "z": 1.0}, 2) == {"x": 1, "y": 2, "z": 1}
    assert assign({"big": 9.0, "a": 4.0, "b": 4.0, "c": 1.0}, 2) == {
        "big": 1, "a": 2, "b": 2, "c": 2}


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", *args)
    return [line for line in result.stdout.lines if "::" in line]


@pytest.mark.slow
def test_plain_tests_split_by_module_or_their_xdist_group(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_a="def test_1(): pass\ndef test_2(): pass\ndef test_3(): pass\n",
        test_b="def test_1(): pass\n",
        test_c="import pytest\n@pytest.mark.xdist_group('g')\ndef test_1(): pass\n"
               "def test_2(): pass\n",
        test_d="import pytest\n@pytest.mark.xdist_group('g')\ndef test_1(): pass\n")
    everything = collected(pytester)
    parts = [collected(pytester, f"--gt-shard={k}/2") for k in (1, 2)]
    assert sorted(parts[0] + parts[1]) == sorted(everything)
    assert all(parts)
    shard_of = {nodeid: k for k, part in enumerate(parts) for nodeid in part}
    # one module, one shard; the two tests marked with group 'g' in one shard
    assert len({shard_of[n] for n in everything if n.startswith("test_a.py")}) == 1
    assert shard_of["test_c.py::test_1"] == shard_of["test_d.py::test_1"]
    # the same split again (and whatever the order of the files on the command line)
    assert sorted(collected(pytester, "--gt-shard=1/2", "test_d.py", "test_c.py",
                            "test_b.py", "test_a.py")) == sorted(parts[0])


@pytest.mark.slow
def test_a_bad_shard_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_1(): pass\n")
    result = pytester.runpytest("--gt-shard=3/2", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gt-shard '3/2': shard 3 of 2 does not exist*"])
    result = pytester.runpytest("--gt-shard=1/2", "--gt-shard-timings=missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gt-shard-timings: missing.json: cannot read the "
                                 "results*"])


# --------------------------------------------------------------------------- end to end

TOOL = ('models = ["tiny-llama"]\nruntimes = ["llamacpp", "torchao"]\n'
        'quantizations = ["int8", "int4"]\nsuites = ["canary", "token", "drift", "ppl"]\n'
        'prompts = ["completion", "code"]\n')


def comparable_ticket(path: Path) -> list[str]:
    """The ticket without its date, paths into the local cache and thread counts as in the
    results."""
    text = results_json.CACHE_PATH.sub(lambda m: f"<cache>/{m.group(1)}/", path.read_text())
    text = results_json.THREADS.sub(r"\1=<threads>", text)
    return [line for line in text.splitlines() if not line.startswith("**Date:**")]


def junit_entries(path: Path) -> set[tuple[str, str, str, str]]:
    """(classname, name, result, groundtruth_outcome) of every parity test case."""
    out = set()
    for case in ET.parse(path).getroot().iter("testcase"):
        if ".groundtruth.toml" not in case.get("classname", ""):
            continue
        kinds = [c.tag if c.tag != "skipped" else f"skipped:{c.get('type')}" for c in case
                 if c.tag in ("failure", "error", "skipped")]
        result = {"failure": "failed", "error": "failed"}.get(kinds[0], kinds[0]) if kinds \
            else "passed"
        prop = case.find("properties/property[@name='groundtruth_outcome']")
        out.add((case.get("classname", ""), case.get("name", ""), result,
                 "" if prop is None else prop.get("value", "")))
    return out


def matrix_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "groundtruth parity matrix" in line)
    return [line for line in lines[start + 1:]
            if line.startswith(("model", "tiny-", "-", "X "))]


@pytest.mark.slow
@pytest.mark.requires_llamacpp
@pytest.mark.requires_torchao
def test_two_shards_merged_equal_one_run(make_project: Project, tmp_path: Path,
                                         gt_cache: Path, tiny: Callable[[str], ResolvedModel],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    tiny("llama")  # the source model exists; every run below links it into its cache
    pytester = make_project("", models=("tiny-llama",))

    def configure(cache: Path) -> None:
        cache.mkdir()
        (cache / "models").symlink_to(gt_cache / "models", target_is_directory=True)
        pytester.path.joinpath("pyproject.toml").write_text(
            f"[tool.groundtruth]\ncache_dir = {str(cache)!r}\n{TOOL}")

    configure(tmp_path / "whole")
    whole = pytester.runpytest("-n", "0", "-p", "no:cacheprovider",
                               f"--gt-results={tmp_path / 'whole.json'}",
                               f"--gt-ticket={tmp_path / 'whole.md'}",
                               f"--junitxml={tmp_path / 'whole.xml'}")
    outcomes = whole.parseoutcomes()
    assert outcomes.get("errors", 0) == 0, whole.stdout.str()[-3000:]

    shared = f"file://{tmp_path / 'shared'}"
    selected = []
    for k in (1, 2):
        configure(tmp_path / f"shard{k}")
        run = pytester.runpytest("-n", "1", "-p", "no:cacheprovider", f"--gt-shard={k}/2",
                                 f"--gt-cache-url={shared}",
                                 f"--gt-results={tmp_path / f'shard{k}.json'}")
        assert run.parseoutcomes().get("errors", 0) == 0, run.stdout.str()[-3000:]
        selected.append(len(results_json.read(tmp_path / f"shard{k}.json").records))
        assert f"shard {k}/2 by static estimates" in run.stdout.str()
    assert all(selected)
    assert sum(selected) == len(results_json.read(
        tmp_path / "whole.json").records)
    # the shards published what they built, under index/ once per artifact
    assert list((tmp_path / "shared" / "index").glob("*.json"))

    capsys.readouterr()
    code = main(["merge", str(tmp_path / "shard1.json"), str(tmp_path / "shard2.json"),
                 "--results", str(tmp_path / "merged.json"), "--ticket",
                 str(tmp_path / "merged.md"), "--junit", str(tmp_path / "merged.xml"),
                 "--html", str(tmp_path / "merged.html")])
    printed = capsys.readouterr().out
    assert code == 0, printed

    whole_doc = json.loads((tmp_path / "whole.json").read_text())
    merged_doc = json.loads((tmp_path / "merged.json").read_text())
    assert results_json.comparable(merged_doc) == results_json.comparable(whole_doc)
    assert set(merged_doc["durations"]) >= {r["nodeid"] for r in merged_doc["results"]}
    if (tmp_path / "whole.md").exists():
        assert comparable_ticket(tmp_path / "merged.md") == comparable_ticket(
            tmp_path / "whole.md")
    else:
        assert not (tmp_path / "merged.md").exists()
    assert junit_entries(tmp_path / "merged.xml") == junit_entries(tmp_path / "whole.xml")
    assert matrix_lines("groundtruth parity matrix\n" + printed) == matrix_lines(
        whole.stdout.str())
    page = (tmp_path / "merged.html").read_text()
    assert "<h2>Parity matrix</h2>" in page
    assert len(re.findall(r"<tr><td><code>", page)) == len(merged_doc["results"])

    # The merged durations balance the next split: every shard has measured costs now.
    again = pytester.runpytest("-n", "0", "-p", "no:cacheprovider", "--gt-shard=2/2",
                               f"--gt-shard-timings={tmp_path / 'merged.json'}",
                               "--collect-only")
    assert f"by the timings of {tmp_path / 'merged.json'}" in again.stdout.str()
    measured = re.search(r"groundtruth shard 2/2: (\d+) tests", again.stdout.str())
    assert measured is not None
    assert 0 < int(measured.group(1)) < len(merged_doc["results"])


def test_merge_refuses_overlapping_shards(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    record = {"name": "token[x]", "nodeid": "t.toml::token[x]", "case": {},
              "case_fields": {"suite": "token", "model": "m", "runtime": "r", "quant": "int8"},
              "result": None, "runtime_version": "", "reason": "",
              "settings": {"sources": [], "oracle_dir": "o", "eval_text": "e"},
              "outcome": "skipped", "verdict": None, "duration": 0.0}
    doc = {"schema": results_json.SCHEMA, "started": "2026-01-01T00:00:00+00:00",
           "finished": "2026-01-01T00:01:00+00:00", "results": [record]}
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(doc))
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "t.toml::token[x] is in both" in err
    assert "a.json" in err
    assert "b.json" in err
    (tmp_path / "c.json").write_text("{}")
    assert main(["merge", str(tmp_path / "c.json")]) == 2
    assert "not a pytest-groundtruth results file" in capsys.readouterr().err


def test_timings_read_every_test_and_older_documents(tmp_path: Path) -> None:
    doc = {"schema": results_json.SCHEMA, "results": [
        {"nodeid": "t.toml::token[a]", "duration": 2.5},
        {"nodeid": "t.toml::token[b]", "duration": 1.0}]}
    older = tmp_path / "older.json"  # before `durations`: the parity results' own
    older.write_text(json.dumps(doc))
    assert results_json.durations(older) == {"t.toml::token[a]": 2.5, "t.toml::token[b]": 1.0}
    newer = tmp_path / "newer.json"  # `durations` has every test, setup and teardown too
    newer.write_text(json.dumps({**doc, "durations": {"t.toml::token[a]": 3.0,
                                                      "test_x.py::test_y": 4.0}}))
    assert results_json.durations(newer) == {"t.toml::token[a]": 3.0,
                                             "t.toml::token[b]": 1.0,
                                             "test_x.py::test_y": 4.0}
    with pytest.raises(results_json.ResultsError, match=r"missing\.json"):
        results_json.durations(tmp_path / "missing.json")


def test_bench_deals_the_cpus_out_to_the_shards() -> None:
    mine = os.sched_getaffinity(0)
    shares = cpu_shares(len(mine))
    assert all(s is not None and len(s) == 1 for s in shares)
    assert frozenset().union(*(s for s in shares if s is not None)) == mine
    assert cpu_shares(len(mine) + 1) == [None] * (len(mine) + 1)  # too few: shared


def test_the_shard_section_judges_time_results_and_subsets() -> None:
    from pytest_groundtruth.lab.benchmark import (
        SHARDS_BEGIN,
        SHARDS_END,
        RunTiming,
        ShardBench,
        replace_between,
        shards_section,
    )

    def run(label: str, seconds: float, code: int = 0) -> RunTiming:
        return RunTiming(label, 1, seconds, code, "10 passed", ())

    def bench(a: float, b: float, identical: bool = True, select: str | None = None,
              code: int = 0) -> str:
        return "\n".join(shards_section(ShardBench(
            run("unsharded", 100.0), (run("shard 1/2", a), run("shard 2/2", b, code)),
            identical, () if identical else ("t::x",), ("5 parity tests", "5 parity tests"),
            ("0", "1"), select)))

    met = bench(50.0, 58.0)
    assert met.startswith(SHARDS_BEGIN)
    assert met.endswith(SHARDS_END)
    assert "| unsharded (CPUs 0) | 1 | 100.0 | 1.00 |" in met  # one machine's share
    assert "0.58 (target <= 0.6 for 2 shards: met)" in met
    assert "MISSED (slower)" in bench(50.0, 61.0)
    assert "MISSED (results differ)" in bench(50.0, 55.0, identical=False)
    assert "MISSED (a run failed)" in bench(50.0, 55.0, code=1)
    subset = bench(50.0, 55.0, select="token")
    assert "not judged: a subset" in subset
    assert 'only `-k "token"`' in subset
    document = f"# B\n\n{SHARDS_BEGIN}\nstale\n{SHARDS_END}\n\nafter\n"
    replaced = replace_between(document, met, SHARDS_BEGIN, SHARDS_END)
    assert "stale" not in replaced
    assert replaced.endswith("\n\nafter\n")


def test_durations_inside_texts_do_not_make_two_runs_differ() -> None:
    """The bench found one run and its merged shards 'different' by a gateway gate's
    'artifact.gguf opened in 0.20 s' against '... in 0.19 s'."""
    def doc(detail: str) -> dict[str, object]:
        return {"results": [{"nodeid": "t", "case": {"suite": "gateway"},
                             "result": {"details": {"gates": [{"detail": detail}]}}}]}

    first = results_json.comparable(doc("artifact.gguf opened in 0.20 s"))
    assert first == results_json.comparable(doc("artifact.gguf opened in 0.19 s"))
    assert first != results_json.comparable(doc("artifact.gguf failed to open"))


def test_paths_into_each_runs_own_cache_do_not_make_two_runs_differ() -> None:
    """paired's call names llama.cpp's converter in the run's own cache."""
    def doc(cache: str) -> dict[str, object]:
        return {"results": [{"nodeid": "t", "case": {"suite": "paired"}, "result": {
            "calls": [f"reference conversion: python {cache}/llama.cpp/0.3.36-1/"
                      f"convert_hf_to_gguf.py {cache}/models/m-1 --outtype f32"]}}]}

    assert results_json.comparable(doc("/tmp/b/whole")) == results_json.comparable(
        doc("/tmp/b/shard1"))
