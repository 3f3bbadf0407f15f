"""A runtime that crashes, hangs, prints garbage or returns NaN fails that test only.

The engine is the named apr stand-in (apr cannot be installed here), driven through the
real AprRuntime; APR_STANDIN_FAULT makes one subcommand misbehave while the others work,
so each run shows the faulty tests reported as such and the rest running on.
``--gt-no-cache``: cached results of earlier runs must not hide the faulty engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from standins.apr.cli import write_launcher

Project = Callable[..., pytest.Pytester]


@pytest.fixture
def apr_project(make_project: Project, tmp_path: Path) -> pytest.Pytester:
    launcher = write_launcher(tmp_path / "bin")
    return make_project(
        'models = ["tiny-llama"]\nruntimes = ["apr"]\nquantizations = ["float16"]\n'
        f'suites = ["token", "ppl"]\nprompts = ["code", "greeting"]\napr_bin = "{launcher}"\n',
        models=("tiny-llama",),
    )


def records(pytester: pytest.Pytester) -> dict[str, dict[str, str]]:
    data = json.loads((pytester.path / "r.json").read_text())
    return {r["name"]: r for r in data["results"]}


@pytest.mark.slow
def test_crash_and_nan_fail_only_their_tests(apr_project: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APR_STANDIN_FAULT", "run:crash,eval:nan")
    result = apr_project.runpytest("--gt-no-cache", "--gt-results", "r.json")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "*token[[]tiny-llama-apr-float16-code[]]: EngineFailure: [[]crashed[]] *",
        "*call: * run * -p 'def fibonacci(n):' -n 32 *--json*",
        "*panicked*",
        "*ppl[[]tiny-llama-apr-float16[]]: EngineFailure: [[]NaN/Inf[]]*",
    ])
    seen = records(apr_project)
    assert seen["token[tiny-llama-apr-float16-greeting]"]["fault"] == "crashed"
    assert seen["ppl[tiny-llama-apr-float16]"]["fault"] == "NaN/Inf"


@pytest.mark.slow
def test_hang_times_out_and_the_rest_runs_on(apr_project: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APR_STANDIN_FAULT", "run:hang")
    result = apr_project.runpytest("--gt-no-cache", "--gt-timeout", "20", "--gt-results",
                                    "r.json")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["*EngineFailure: [[]timeout[]]*"])
    assert records(apr_project)["ppl[tiny-llama-apr-float16]"]["outcome"] == "passed"


@pytest.mark.slow
def test_garbage_instead_of_json(apr_project: pytest.Pytester,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APR_STANDIN_FAULT", "run:garbage")
    result = apr_project.runpytest("--gt-no-cache", "-k", "code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*EngineFailure: [[]garbage output[]]*"])
