"""An unchanged re-run does no engine work; two workers split the artifacts, never the work.

Counts, not seconds (``GROUNDTRUTH_STATS``: each pytest process reports what it did):
the cold run with two workers builds each artifact and makes each result once in all,
one worker per artifact; the warm re-run, with and without workers, opens no runner,
makes no result, builds nothing and does not even import torch. How long these take
is ``groundtruth bench``'s business (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.plugin.collection import prefer_loadgroup
from pytest_groundtruth.plugin.stats import ProcessStats, read_process_stats

Project = Callable[..., pytest.Pytester]
TOOL = ('models = ["tiny-llama"]\nruntimes = ["llamacpp", "torchao"]\n'
        'quantizations = ["int8", "int4"]\n')


@pytest.mark.parametrize(("dist", "workers", "distload", "expected"), [
    ("no", 2, False, "loadgroup"),      # `pytest -n 2`: the plugin's default
    ("no", "auto", False, "loadgroup"),  # `pytest -n auto`
    ("load", 2, False, "load"),         # `--dist load`: the user's choice, kept
    ("loadfile", 2, False, "loadfile"),
    ("no", 2, True, "no"),              # `-d`: xdist's own shorthand for load
    ("no", 0, False, "no"),             # `-n 0`: nothing is distributed
    ("no", None, False, "no"),          # no -n at all
])
def test_loadgroup_is_the_default_distribution(dist: str, workers: object, distload: bool,
                                              expected: str) -> None:
    option = Namespace(dist=dist, numprocesses=workers, distload=distload)
    assert prefer_loadgroup(option) == (expected != dist)
    assert option.dist == expected


def run(pytester: pytest.Pytester, stats: Path, *args: str) -> tuple[pytest.RunResult,
                                                                   list[ProcessStats]]:
    stats.unlink(missing_ok=True)
    result = pytester.runpytest(*args)
    assert result.parseoutcomes().get("errors", 0) == 0, result.stdout.str()[-3000:]
    return result, read_process_stats(stats)


def total(stats: list[ProcessStats], field: str) -> int:
    return sum(int(getattr(s, field)) for s in stats)


@pytest.mark.slow
@pytest.mark.requires_llamacpp
@pytest.mark.requires_torchao
def test_cold_with_two_workers_then_warm_does_no_engine_work(
        make_project: Project, tmp_path: Path, gt_cache: Path,
        tiny: Callable[[str], ResolvedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    tiny("llama")  # the source model exists; the artifacts and results are made here
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(gt_cache / "models", target_is_directory=True)
    pytester = make_project("", models=("tiny-llama",))
    pytester.path.joinpath("pyproject.toml").write_text(
        f"[tool.groundtruth]\ncache_dir = {str(cache)!r}\n{TOOL}")
    stats = tmp_path / "stats.jsonl"
    monkeypatch.setenv("GROUNDTRUTH_STATS", str(stats))

    result, cold = run(pytester, stats, "-n", "2", "-v", "-p", "no:cacheprovider")
    workers = {s.worker for s in cold}
    assert workers == {"main", "gw0", "gw1"}
    # Each artifact is built once, each result made once, over both workers.
    builds = (cache / "builds.log").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in builds]
    assert len(keys) == len(set(keys)), builds  # no artifact built twice
    # int8, int4, the int4 export and reimport; the LoRA suite's merged model and adapter
    # where peft is installed
    assert total(cold, "artifacts_built") == len(builds) >= 4
    assert total(cold, "results_made") == len(list((cache / "results").rglob("*.json")))
    # loadgroup by default: one artifact's tests on one worker; node ids without "@group".
    ran: dict[str, set[str]] = {}
    for gw, test in re.findall(r"\[(gw\d)\] \[ *\d+%\] \w+ (\S+)", result.stdout.str()):
        assert "@" not in test, test
        if "::cuda[" in test:
            continue  # the GPU ladder (skips here) has groups of its own
        # <model>-<runtime>-[<variant>-]<quant>: the pair suites join their first quant's
        # group; the LoRA suite's cases are the derived model's (float32)
        found = re.search(r"\[(tiny-llama(?:-lora)?)-(\w+)-(?:[a-z]+-)?(float32|int8|int4)",
                          test)
        assert found, test
        ran.setdefault("-".join(found.groups()), set()).add(gw)
    assert {f"tiny-llama-{a}" for a in ("llamacpp-int8", "llamacpp-int4", "torchao-int8",
                                        "torchao-int4")} <= set(ran)
    assert all(len(gws) == 1 for gws in ran.values()), ran

    for args in (["-n", "2"], ["-n", "0"]):
        _, warm = run(pytester, stats, *args, "-p", "no:cacheprovider")
        assert {s.worker for s in warm} == ({"main", "gw0", "gw1"} if args[1] == "2"
                                             else {"main"})
        for field in ("runners_opened", "results_made", "artifacts_built"):
            assert total(warm, field) == 0, (args, field, warm)
        assert not any("torch" in s.imported for s in warm), warm
    assert (cache / "builds.log").read_text().splitlines() == builds
