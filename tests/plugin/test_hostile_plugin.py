"""A run where every parity test skips (an unset API key variable): said in the summary,
exit 0 by default, non-zero with ``--gt-strict-skips``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_groundtruth.runtimes.server import free_port


@pytest.mark.slow
def test_an_all_skip_run_is_said_and_fails_when_strict(
        make_project: Callable[..., pytest.Pytester], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GT_UNSET_KEY", raising=False)
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["srv"]\nquantizations = ["int8"]\n'
        'suites = ["gateway", "token"]\nprompts = ["code"]\n'
        f'[tool.groundtruth.runtime.srv]\nkind = "openai"\n'
        f'base_url = "http://127.0.0.1:{free_port()}"\nmodel = "m"\n'
        'api_key_env = "GT_UNSET_KEY"\nquantizations = ["int8"]\nretries = 0\n',
        models=("tiny-llama",))
    lenient = pytester.runpytest("-rs")
    lenient.assert_outcomes(skipped=2)
    assert lenient.ret == 0
    lenient.stdout.fnmatch_lines([
        "groundtruth: every parity test of this run skipped (2): nothing was checked*"
        "--gt-strict-skips makes this fail the run",
        "*GT_UNSET_KEY (its API key) is not set*"])
    strict = pytester.runpytest("--gt-strict-skips")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["ERROR groundtruth: 2 parity test(s) skipped for something "
                                 "missing here (--gt-strict-skips)*GT_UNSET_KEY*"])


@pytest.mark.slow
def test_a_quantization_no_runtime_of_the_run_offers_warns(
        make_project: Callable[..., pytest.Pytester]) -> None:
    pytester = make_project(
        'models = ["tiny-llama"]\nruntimes = ["transformers"]\n'
        'quantizations = ["float32", "q4_k_m"]\nsuites = ["token"]\nprompts = ["code"]\n',
        models=("tiny-llama",))
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines([
        "*GroundtruthWarning: *groundtruth.toml: quantization 'q4_k_m' is offered by none of "
        "the runtimes of this run (transformers: *): no test runs it"])
