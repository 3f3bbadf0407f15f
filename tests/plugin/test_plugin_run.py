"""Running the matrix as users do: outcomes, failure text, reports, serial and parallel.

The project uses the tiny llama with the transformers runtime: float32 matches its
oracle exactly (0 mismatches on every prompt), bfloat16 drifts on two prompts
(27/32 on `code`), so the matrix has real passes and real failures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Project = Callable[..., pytest.Pytester]

# Tiny random-weight models have near-flat logits, so their first flips are near ties that
# the default rule forgives; these projects exercise failures, so they count every position.
TOOL = ('models = ["tiny-llama"]\nruntimes = ["transformers"]\nnear_ties = "count"\n'
        'quantizations = ["float32", "bfloat16"]\nsuites = ["token", "ppl"]\n'
        'prompts = ["arithmetic", "code", "completion", "greeting"]\n')
BF16_FAILS = {"token[tiny-llama-transformers-bfloat16-arithmetic]",
              "token[tiny-llama-transformers-bfloat16-code]"}


@pytest.fixture(params=[[], ["-n", "0"], ["-n", "2"]], ids=["plain", "n0", "n2"])
def plugin_args(request: pytest.FixtureRequest) -> list[str]:
    args: list[str] = request.param
    return args


def outcomes(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text())
    return {r["name"]: r["outcome"] for r in data["results"]}


@pytest.mark.slow
def test_outcomes_are_the_same_serial_and_parallel(make_project: Project,
                                                   plugin_args: list[str]) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest(*plugin_args, "--gt-results", "results.json")
    result.assert_outcomes(passed=8, failed=2)
    seen = outcomes(pytester.path / "results.json")
    assert {n for n, o in seen.items() if o == "failed"} == BF16_FAILS
    assert len(seen) == 10
    result.stdout.fnmatch_lines([
        "*groundtruth parity matrix*",
        "model*runtime*quant*token*ppl*",
        "tiny-llama*transformers*bfloat16*2F 2C*1C*n/a (no gateway)",
        "tiny-llama*transformers*float32*4C*1C*",
    ])


def test_failure_explains_itself(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    result = pytester.runpytest("-k", "bfloat16 and code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "token[[]tiny-llama-transformers-bfloat16-code[]]: 27/32 positional mismatches > 3;"
        " first divergence at position 5",
        "  bound: 3 (default)",
        "  pos  oracle id  oracle text*runtime id*runtime text*oracle logp(runtime)*near tie",
        "  5  *",
        "  artifact: *tiny-llama-*",
        "  output of: AutoModelForCausalLM.from_pretrained(*dtype=torch.bfloat16).generate("
        "<'def fibonacci(n):'>, max_new_tokens=32, do_sample=False)",
    ])


def test_a_justified_bound_from_groundtruth_toml_is_applied_and_shown(
    make_project: Project,
) -> None:
    pytester = make_project(
        TOOL, models=("tiny-llama",),
        groundtruth_toml="[[bounds]]\nsuite = 'token'\nquantization = 'bfloat16'\n"
        "prompt = 'code'\nmax_mismatches = 26\nreason = 'random weights: near-flat logits'\n")
    result = pytester.runpytest("-k", "bfloat16 and code")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["  bound: 26 (*groundtruth.toml: random weights: near-flat*"])


def test_unresolvable_model_skips_with_an_actionable_reason(
    make_project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    pytester = make_project(
        'models = ["remote"]\nruntimes = ["transformers"]\nquantizations = ["float32"]\n'
        'suites = ["token"]\n[tool.groundtruth.roster.remote]\n'
        'source = "hf:groundtruth-tests/absent"\narchitecture = "llama"\nlayers = 2\n'
        "heads = 4\nkv_heads = 4\nhidden = 64\nvocab = 49152\nppl_ceiling = 10\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=5)  # one per prompt
    result.stdout.fnmatch_lines([
        "SKIPPED [[]5[]] *model 'remote' (groundtruth-tests/absent) is not in the local "
        "Hugging Face cache and HF_HUB_OFFLINE is set: download it once where the hub is "
        "reachable: `hf download groundtruth-tests/absent*"])


def test_missing_oracle_is_an_error_naming_the_file(make_project: Project) -> None:
    pytester = make_project(TOOL)  # no oracles copied
    result = pytester.runpytest("-k", "float32 and code and token")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*OracleError: *oracle/tiny-llama/code.json: oracle file "
                                 "missing; generate it with `groundtruth oracle`*"])


@pytest.mark.slow
def test_ticket_only_when_something_failed(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    ticket = pytester.path / "ticket.md"
    result = pytester.runpytest("-k", "float32", "--gt-ticket", str(ticket))
    result.assert_outcomes(passed=5)
    assert not ticket.exists()
    result.stdout.fnmatch_lines(["*no parity failures, nothing written*"])

    pytester.runpytest("--gt-ticket", str(ticket), "-n", "2")
    text = ticket.read_text()
    assert text.startswith("## Model Parity Failures\n")
    for expected in ("**Date:**", "**Tool versions:** python", "transformers ",
                     "**Oracle provenance:**", "- `tiny-llama`:", "### 2 failure(s)",
                     "#### `token/tiny-llama-transformers-bfloat16-code`",
                     "**Error:** 27/32 positional mismatches > 3",
                     "### Reproduction",
                     "pytest 'tests/groundtruth.toml::token[tiny-llama-transformers-"
                     "bfloat16-code]'",
                     "groundtruth oracle --check --model tiny-llama"):
        assert expected in text, expected


@pytest.mark.slow
def test_html_report_has_matrix_and_token_tables(make_project: Project,
                                                 plugin_args: list[str]) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    pytester.runpytest(*plugin_args, "--html", "report.html", "--self-contained-html")
    page = (pytester.path / "report.html").read_text()
    assert "<h2>Parity matrix</h2>" in page
    assert "perplexity text:" in page
    assert "27/32 positional mismatches" in page  # the failing test's extra
    assert "oracle logp(runtime)" in page


@pytest.mark.slow
def test_junitxml_works_as_usual(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    pytester.runpytest("--junitxml", "junit.xml")
    xml = (pytester.path / "junit.xml").read_text()
    assert 'name="token[tiny-llama-transformers-bfloat16-code]"' in xml
    assert xml.count("<failure") == 2


def _results(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((pytester.path / "r.json").read_text())["results"]
    return data


@pytest.mark.slow
def test_results_json_records_every_measurement(make_project: Project) -> None:
    pytester = make_project(TOOL, models=("tiny-llama",))
    pytester.runpytest("--gt-results", "r.json")
    records = {r["name"]: r for r in _results(pytester)}
    code = records["token[tiny-llama-transformers-bfloat16-code]"]["result"]
    assert (code["measured"], code["bound"], code["first_divergence"]) == (27, 3, 5)
    ppl = records["ppl[tiny-llama-transformers-float32]"]["result"]
    assert ppl["details"]["perplexity"] == pytest.approx(ppl["details"]["oracle_perplexity"],
                                                         rel=1e-5)
