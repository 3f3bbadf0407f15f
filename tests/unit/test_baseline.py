"""The known-failure baseline: strict xfails that a fix turns into a failing XPASS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.plugin.baseline import BaselineError, load_baseline, write_baseline

Project = Callable[..., pytest.Pytester]
TOOL = ('models = ["tiny-llama"]\nruntimes = ["transformers"]\n'
        'quantizations = ["float32", "bfloat16"]\nsuites = ["token"]\n')
FAILING = "token[tiny-llama-transformers-bfloat16-code]"
PASSING = "token[tiny-llama-transformers-float32-code]"


def test_file_format_roundtrip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "baseline.txt"
    write_baseline(path, {"b[x]": "3", "a[y]": "0.25"})
    text = path.read_text()
    assert text.splitlines()[-2:] == ["a[y]  0.25", "b[x]  3"]  # sorted, aligned
    assert load_baseline(path) == {"a[y]": "0.25", "b[x]": "3"}
    path.write_text("token[x] 3\ntoken[x] 4\n")
    with pytest.raises(BaselineError, match=r"baseline.txt:2: token\[x\] is listed twice"):
        load_baseline(path)
    path.write_text("just-words here and there\n")
    with pytest.raises(BaselineError, match=r"baseline.txt:1: expected"):
        load_baseline(path)
    with pytest.raises(BaselineError, match="create it with --gt-baseline-update"):
        load_baseline(tmp_path / "absent.txt")


def test_known_failure_xfails_new_failure_fails(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "baseline.txt").write_text(f"{FAILING}  27\n")
    result = pytester.runpytest("--gt-baseline", "baseline.txt", "-rfxX")
    result.assert_outcomes(passed=6, xfailed=1, failed=1)
    result.stdout.fnmatch_lines([
        "FAILED *token[[]tiny-llama-transformers-bfloat16-arithmetic[]]*",
        f"XFAIL *{FAILING}* - known falsification (baseline baseline.txt: measured 27)",
    ])


def test_fixed_failure_is_a_strict_xpass(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "baseline.txt").write_text(f"{PASSING}  0\n")
    result = pytester.runpytest("--gt-baseline", "baseline.txt", "-k", "float32 and code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*known falsification*"])


def test_update_rewrites_from_the_run_and_then_passes(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    baseline = pytester.path / "baseline.txt"
    baseline.write_text(f"{PASSING}  0\n")  # stale entry: will be dropped
    update = pytester.runpytest("--gt-baseline", "baseline.txt", "--gt-baseline-update", "-n",
                                "2")
    update.assert_outcomes(passed=6, xfailed=2)
    update.stdout.fnmatch_lines(["*2 known falsification(s) written to baseline.txt*"])
    assert load_baseline(baseline) == {
        "token[tiny-llama-transformers-bfloat16-arithmetic]": "30",
        FAILING: "27",
    }
    again = pytester.runpytest("--gt-baseline", "baseline.txt")
    again.assert_outcomes(passed=6, xfailed=2)


def test_update_needs_a_file(make_project: Project) -> None:
    pytester = make_project(TOOL)
    result = pytester.runpytest("--gt-baseline-update")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--gt-baseline-update needs --gt-baseline FILE*"])


def test_near_tie_exemption_is_reported_not_silent(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    exempt = pytester.runpytest("-k", "bfloat16 and code", "--gt-near-ties", "exempt",
                                "--gt-results", "exempt.json")
    exempt.assert_outcomes(passed=1)
    record = json.loads((pytester.path / "exempt.json").read_text())["results"][0]["result"]
    assert record["measured"] == 0
    assert record["details"]["mismatches"] == 27
    assert "near-tie flip at position 5" in record["notes"][0]
    assert "27 positional mismatches without the exemption" in record["notes"][0]
    # The default counts the same flip and everything after it.
    counted = pytester.runpytest("-k", "bfloat16 and code", "--gt-near-ties", "count",
                                 "--gt-results", "count.json")
    counted.assert_outcomes(failed=1)
    record = json.loads((pytester.path / "count.json").read_text())["results"][0]["result"]
    assert record["measured"] == 27
    assert record["notes"] == []
