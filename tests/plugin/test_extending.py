"""A suite added from outside the package: one module plus its entry point, nothing else.

The pytester project holds a tiny distribution (a module and a ``.dist-info`` with
``entry_points.txt``) on the path, exactly what ``pip install`` of a plugin package leaves
behind; the plugin then finds the suite through ``importlib.metadata`` like a built-in one,
and so do the qualification score (its declared weight), the floor of a run (its declared
engine work) and ``groundtruth falsify`` (its row, black or white box).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Project = Callable[..., pytest.Pytester]

SUITE_MODULE = '''
"""stopping: the runtime stops where the oracle stops (same stop reason and length)."""

from pytest_groundtruth.suites.quality import Weight
from pytest_groundtruth.suites.result import SuiteResult
from pytest_groundtruth.suites.spec import Box, Suite, Work


def run(case, ctx):
    oracle = ctx.inputs.oracle(case.model, case.prompt)
    gen, artifact = ctx.results.generate(case.model, case.runtime, case.quant, case.prompt)
    passed = (gen.stop_reason, len(gen.tokens)) == (oracle.stop_reason, len(oracle.tokens))
    return SuiteResult(
        case=case, passed=passed,
        summary=f"stopped after {len(gen.tokens)} tokens ({gen.stop_reason}); the oracle "
                f"after {len(oracle.tokens)} ({oracle.stop_reason})",
        measured=len(gen.tokens), bound=len(oracle.tokens), artifact=str(artifact.path),
    )


def quality(result):
    return 1.0 if result.passed else 0.0


SUITE = Suite("stopping", "the runtime stops where the oracle stops", run, rank=200,
              weight=Weight(20, quality, "stops where the oracle stops"),
              work=frozenset({Work.GENERATE}), box=Box.BLACK)
'''

# What the tools read of the suite, in a process that sees only the installed entry point.
TOOLS_SCRIPT = '''
import json
from pytest_groundtruth.report.score import weight_of
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.lab import falsify, floor, qualify

work, whole = floor.work_of([Case("stopping", "m", "rt", "int8", "code")])
print(json.dumps({
    "weight": weight_of("stopping"),
    "weights_table": qualify.weights_table(),
    "work": [sorted(w.kinds) for w in work],
    "timed_whole": whole,
    "falsify": "stopping" in falsify.SUITES,
    "white_box": list(falsify.WHITE_BOX),
    "falsify_table": falsify.suite_table([], falsify.SUITES, ("int8",)),
}))
'''


def install_suite(root: Path) -> None:
    (root / "gt_stopping.py").write_text(SUITE_MODULE)
    info = root / "gt_stopping-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gt-stopping\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pytest_groundtruth.suites]\nstopping = gt_stopping:SUITE\n")


@pytest.mark.slow
def test_a_suite_registered_by_another_package_runs_like_a_built_in(
    make_project: Project,
) -> None:
    pytester = make_project('models = ["tiny-llama"]\nruntimes = ["transformers"]\n'
                            'quantizations = ["float32"]\nsuites = ["token", "stopping"]\n'
                            'prompts = ["arithmetic", "code", "completion", "greeting"]\n',
                            models=("tiny-llama",))
    install_suite(pytester.path)
    result = pytester.runpytest("-m", "stopping", "--strict-markers", "--gt-results", "r.json")
    result.assert_outcomes(passed=4)
    records = json.loads((pytester.path / "r.json").read_text())["results"]
    assert {r["case"]["suite"] for r in records} == {"stopping"}
    assert all("stopped after" in r["result"]["summary"] for r in records)
    result.stdout.fnmatch_lines(["*groundtruth parity matrix*", "*model*runtime*quant*stopping*"])
    (combination,) = json.loads((pytester.path / "r.json").read_text())["qualification"]
    assert combination["parts"] == [{"suite": "stopping", "weight": 20.0, "quality": 1.0,
                                     "tests": 4}]


@pytest.mark.slow
def test_a_suite_from_another_package_gets_a_weight_a_floor_and_a_falsify_row(
    pytester: pytest.Pytester,
) -> None:
    install_suite(pytester.path)
    result = pytester.run(sys.executable, "-c", TOOLS_SCRIPT)
    assert result.ret == 0, result.stderr.str()
    found = json.loads(result.stdout.lines[-1])
    assert found["weight"] == 20
    assert "| stopping | 20 | stops where the oracle stops |" in found["weights_table"]
    assert found["work"] == [["generate"]]
    assert found["timed_whole"] == []
    assert found["falsify"]
    assert found["white_box"] == ["integrity"]
    assert any(row.startswith("| `stopping` | black | none |")
               for row in found["falsify_table"]), found["falsify_table"]


@pytest.mark.slow
def test_an_unregistered_suite_is_a_configuration_error(make_project: Project) -> None:
    pytester = make_project('models = ["tiny-llama"]\nsuites = ["stopping"]\n')
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*key 'suites' has 'stopping', not one of *canary*gateway*"])
