"""The known-failure baseline: strict xfails that a fix turns into a failing XPASS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.plugin.baseline import (
    BaselineEntry,
    BaselineError,
    entry_for,
    load_baseline,
    regression,
    write_baseline,
)

Project = Callable[..., pytest.Pytester]
RULE = ('models = ["tiny-llama"]\nruntimes = ["transformers"]\n'
        'quantizations = ["float32", "bfloat16"]\nsuites = ["token"]\n'
        'prompts = ["arithmetic", "code", "completion", "greeting"]\n')
# bfloat16 flips a near tie on `code`: counting every position keeps a known failure to test
TOOL = RULE + 'near_ties = "count"\n'
FAILING = "token[tiny-llama-transformers-bfloat16-code]"
PASSING = "token[tiny-llama-transformers-float32-code]"


def test_file_format_roundtrip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "baseline.txt"
    write_baseline(path, {"b[x]": BaselineEntry("3", "higher", "0"),
                          "a[y]": BaselineEntry("0.25", "lower", "1%")})
    text = path.read_text()
    assert text.splitlines()[-2:] == ["a[y]  0.25  lower   1%", "b[x]  3     higher  0"]
    assert load_baseline(path) == {"a[y]": BaselineEntry("0.25", "lower", "1%"),
                                   "b[x]": BaselineEntry("3", "higher", "0")}
    path.write_text("token[x] 3\ntoken[x] 4\n")
    with pytest.raises(BaselineError, match=r"baseline.txt:2: token\[x\] is listed twice"):
        load_baseline(path)
    path.write_text("just-words here and there\n")
    with pytest.raises(BaselineError, match=r"baseline.txt:1: expected"):
        load_baseline(path)
    path.write_text("# header\ntoken[x] 3 sideways 0\n")
    with pytest.raises(BaselineError, match=r"baseline.txt:2: direction 'sideways'"):
        load_baseline(path)
    path.write_text("token[x] 3 higher lots\n")
    with pytest.raises(BaselineError, match=r"baseline.txt:1: tolerance 'lots'"):
        load_baseline(path)
    with pytest.raises(BaselineError, match="create it with --gt-baseline-update"):
        load_baseline(tmp_path / "absent.txt")


def test_old_two_column_files_still_load(tmp_path: Path) -> None:
    path = tmp_path / "baseline.txt"
    path.write_text("# old\ntoken[x]  13\nagreement[y]  {'top1':_0.7}\n")
    entries = load_baseline(path)
    assert entries == {"token[x]": BaselineEntry("13"),
                       "agreement[y]": BaselineEntry("{'top1':_0.7}")}
    assert regression(entries["token[x]"], 99) is None  # no direction: ids only, as before


def test_regression_compares_values_in_the_worse_direction() -> None:
    counts = entry_for(7, "higher")
    assert counts == BaselineEntry("7", "higher", "0")
    assert regression(counts, 7) is None
    assert regression(counts, 3) is None  # better: still a known failure
    assert regression(counts, 25) == (
        "worse than the baseline: measured 25, recorded 7 (higher is worse, tolerance 0)")
    ppl = entry_for(23.85, "higher")
    assert ppl.tolerance == "1%"
    assert regression(ppl, 24.0) is None  # +0.6 % is within 1 %
    assert "measured 24.5, recorded 23.85" in str(regression(ppl, 24.5))
    assert regression(BaselineEntry("0.5", "lower", "0.1"), 0.45) is None
    assert "measured 0.3, recorded 0.5" in str(regression(BaselineEntry("0.5", "lower", "0.1"),
                                                          0.3))
    agreement = entry_for({"top1": 0.7, "kl": 0.3}, {"top1": "lower", "kl": "higher"})
    assert agreement == BaselineEntry("kl=0.3,top1=0.7", "kl:higher,top1:lower", "1%")
    assert regression(agreement, {"top1": 0.71, "kl": 0.29}) is None
    assert "top1 measured 0.6, recorded 0.7" in str(regression(agreement,
                                                               {"top1": 0.6, "kl": 0.3}))
    topk = entry_for(3, "higher")
    assert "measured -, recorded 3" in str(regression(topk, None))  # out of the top-k
    assert regression(entry_for(None, "higher"), 4) is None
    changed = regression(counts, "prompt@0")
    assert changed is not None
    assert "measured prompt@0, recorded 7" in changed


@pytest.mark.slow
def test_known_failure_that_worsens_fails_naming_both_values(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "baseline.txt").write_text(f"{FAILING}  20  higher  0\n")
    result = pytester.runpytest("--gt-baseline", "baseline.txt", "-k", "bfloat16 and code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*worse than the baseline: measured 27, recorded 20 (higher is worse, tolerance 0)*",
        "*27/32 positional mismatches > 3*",
    ])
    (pytester.path / "baseline.txt").write_text(f"{FAILING}  20  higher  40%\n")
    within = pytester.runpytest("--gt-baseline", "baseline.txt", "-k", "bfloat16 and code")
    within.assert_outcomes(xfailed=1)


@pytest.mark.slow
def test_known_failure_xfails_new_failure_fails(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "baseline.txt").write_text(f"{FAILING}  27\n")
    result = pytester.runpytest("--gt-baseline", "baseline.txt", "-rfxX")
    result.assert_outcomes(passed=6, xfailed=1, failed=1)
    result.stdout.fnmatch_lines([
        "FAILED *token[[]tiny-llama-transformers-bfloat16-arithmetic[]]*",
        f"XFAIL *{FAILING}* - known falsification (baseline baseline.txt: measured 27); "
        "values not compared: rewrite with --gt-baseline-update",
    ])


@pytest.mark.slow
def test_fixed_failure_is_a_strict_xpass(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    (pytester.path / "baseline.txt").write_text(f"{PASSING}  0\n")
    result = pytester.runpytest("--gt-baseline", "baseline.txt", "-k", "float32 and code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*known falsification*"])


@pytest.mark.slow
def test_update_rewrites_from_the_run_and_then_passes(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    baseline = pytester.path / "baseline.txt"
    baseline.write_text(f"{PASSING}  0\n")  # stale entry: will be dropped
    update = pytester.runpytest("--gt-baseline", "baseline.txt", "--gt-baseline-update", "-n",
                                "2")
    update.assert_outcomes(passed=6, xfailed=2)
    update.stdout.fnmatch_lines(["*2 known falsification(s) written to baseline.txt*"])
    assert load_baseline(baseline) == {
        "token[tiny-llama-transformers-bfloat16-arithmetic]": BaselineEntry("30", "higher", "0"),
        FAILING: BaselineEntry("27", "higher", "0"),
    }
    again = pytester.runpytest("--gt-baseline", "baseline.txt")
    again.assert_outcomes(passed=6, xfailed=2)


@pytest.mark.slow
def test_update_needs_a_file(make_project: Project) -> None:
    pytester = make_project(TOOL)
    result = pytester.runpytest("--gt-baseline-update")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--gt-baseline-update needs --gt-baseline FILE*"])


@pytest.mark.slow
def test_near_tie_by_rule_is_reported_not_silent(make_project: Project) -> None:
    pytester = make_project(RULE, models=("tiny-llama",))
    exempt = pytester.runpytest("-k", "bfloat16 and code", "--gt-results", "exempt.json")
    exempt.assert_outcomes(passed=1)
    record = json.loads((pytester.path / "exempt.json").read_text())["results"][0]["result"]
    assert record["measured"] == 0
    assert record["details"]["mismatches"] == 27
    assert "near tie at position 5" in record["notes"][0]
    assert "27 positional mismatches counting every position" in record["notes"][0]
    # `count` counts the same flip and everything after it.
    counted = pytester.runpytest("-k", "bfloat16 and code", "--gt-near-ties", "count",
                                 "--gt-results", "count.json")
    counted.assert_outcomes(failed=1)
    record = json.loads((pytester.path / "count.json").read_text())["results"][0]["result"]
    assert record["measured"] == 27
    assert record["notes"] == []


@pytest.mark.slow
def test_an_update_of_some_tests_keeps_the_lines_of_the_others(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    baseline = pytester.path / "baseline.txt"
    not_run = "token[tiny-llama-transformers-bfloat16-greeting]"
    baseline.write_text(f"{PASSING}  0\n{not_run}  9  higher  0\n")
    update = pytester.runpytest("--gt-baseline", "baseline.txt", "--gt-baseline-update",
                                "-k", "code")
    update.assert_outcomes(passed=1, xfailed=1)
    assert load_baseline(baseline) == {FAILING: BaselineEntry("27", "higher", "0"),
                                       not_run: BaselineEntry("9", "higher", "0")}
