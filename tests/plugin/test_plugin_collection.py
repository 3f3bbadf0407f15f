"""Collection as users see it: ids, markers, options, and nothing loaded."""

from __future__ import annotations

from collections.abc import Callable

import pytest

Project = Callable[..., pytest.Pytester]

TINY = 'models = ["tiny-llama"]\nruntimes = ["transformers", "torchao"]\n' \
       'quantizations = ["float32", "int8", "int4"]\n'


def collected(result: pytest.RunResult) -> list[str]:
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


@pytest.mark.slow
def test_collect_only_shows_the_matrix_without_loading_a_model(make_project: Project) -> None:
    pytester = make_project(TINY, models=("tiny-llama",))
    pytester.makeconftest(
        "import sys\n"
        "def pytest_collection_finish(session):\n"
        "    heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'torchao')\n"
        "             if m in sys.modules]\n"
        "    print('HEAVY', heavy)\n"
    )
    result = pytester.runpytest("--collect-only", "-q", "-s")
    ids = collected(result)
    assert "token[tiny-llama-transformers-float32-completion]" in ids
    assert "canary[tiny-llama-torchao-int8-greeting]" in ids
    assert "drift[tiny-llama-torchao-int8-int4-code]" in ids
    assert "ppl[tiny-llama-torchao-gap-int8-int4]" in ids
    assert "roundtrip[tiny-llama-torchao-int4-code]" in ids
    assert "cuda[tiny-llama-transformers-bfloat16-code]" in ids
    # transformers has no int8/int4; torchao has no float32: no such cases
    assert not any("transformers-int8" in i or "torchao-float32" in i for i in ids)
    result.stdout.fnmatch_lines(["HEAVY []"])


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["canary", "token", "drift", "roundtrip", "ppl", "cuda"])
def test_marker_selects_one_suite(make_project: Project, suite: str) -> None:
    pytester = make_project(TINY + "\n[tool.pytest]\n", models=("tiny-llama",))
    result = pytester.runpytest("--collect-only", "-q", "-m", suite, "--strict-markers")
    ids = collected(result)
    assert ids
    assert all(i.startswith(f"{suite}[") for i in ids)


@pytest.mark.slow
def test_keyword_selects_on_ids(make_project: Project) -> None:
    pytester = make_project(TINY, models=("tiny-llama",))
    ids = collected(pytester.runpytest("--collect-only", "-q", "-k", "torchao and code"))
    assert ids
    assert all("torchao" in i and i.endswith("code]") for i in ids)


@pytest.mark.slow
def test_namespaced_options_narrow_the_matrix(make_project: Project) -> None:
    pytester = make_project(TINY, models=("tiny-llama",))
    ids = collected(pytester.runpytest("--collect-only", "-q", "--gt-runtime", "torchao",
                                       "--gt-quant", "int8", "--gt-prompt", "code"))
    assert ids == ["gateway[tiny-llama-torchao-int8]",
                   "canary[tiny-llama-torchao-int8-code]",
                   "token[tiny-llama-torchao-int8-code]",
                   "ppl[tiny-llama-torchao-int8]",
                   "topk[tiny-llama-torchao-int8-code]",
                   "rescore[tiny-llama-torchao-nll-int8]",
                   "rescore[tiny-llama-torchao-int8-code]",
                   "consistency[tiny-llama-torchao-int8-code]",
                   "agreement[tiny-llama-torchao-int8]",
                   "agreement[tiny-llama-torchao-text-int8]",
                   "integrity[tiny-llama-torchao-int8]"]  # no transformers: no cuda cases


@pytest.mark.slow
def test_capability_gaps_are_listed_with_their_reason(make_project: Project) -> None:
    pytester = make_project(TINY, models=("tiny-llama",))
    result = pytester.runpytest("-rs", "-m", "roundtrip", "--gt-runtime", "torchao")
    result.assert_outcomes(skipped=5)  # one per prompt
    result.stdout.fnmatch_lines(["*runtime 'torchao' has no GGUF export (suite 'roundtrip'*"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "tool", "message"),
    [
        (["--gt-model", "nope"], "", "*command line: key 'models' names 'nope'*"),
        ([], 'modles = ["x"]', "*pyproject.toml [[]tool.groundtruth[]]: unknown key(s) 'modles'*"),
        (["--gt-artifact", "garbage"], "", "*expected MODEL:RUNTIME:QUANT=PATH*"),
        (["--gt-quant", "int3"], "", "*key 'quantizations' has 'int3', which no runtime "
         "offers (apr: int8, int4, float16; llamacpp: *"),
    ],
)
def test_invalid_options_and_config_are_errors_that_name_the_key(
    make_project: Project, args: list[str], tool: str, message: str
) -> None:
    pytester = make_project(TINY + tool)
    result = pytester.runpytest("--collect-only", "-q", *args)
    assert result.ret != 0
    result.stdout.fnmatch_lines([message])


@pytest.mark.slow
def test_bad_groundtruth_toml_names_the_file(make_project: Project) -> None:
    pytester = make_project(TINY, groundtruth_toml="[[bounds]]\nsuite = 'token'\n"
                            "max_mismatches = 4\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*groundtruth.toml: bounds[[]0[]]: key 'reason' is required*"])


@pytest.mark.slow
def test_an_unknown_runtime_is_an_error_that_lists_the_known_ones(make_project: Project) -> None:
    pytester = make_project(TINY)
    result = pytester.runpytest("--collect-only", "--gt-runtime", "vllm")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*key 'runtimes' has 'vllm', which is neither a registered "
                                 "runtime (apr, command, llamacpp, openai, torchao, "
                                 "transformers)*"])


@pytest.mark.slow
def test_fixtures_are_documented(make_project: Project) -> None:
    pytester = make_project(TINY)
    result = pytester.runpytest("--fixtures", "-v")
    for name in ("gt_model", "gt_oracle", "gt_runner", "gt_runtime", "apr_runner"):
        result.stdout.fnmatch_lines([f"{name}*", "*Example::*"])
