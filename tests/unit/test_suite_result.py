"""A failed case explains itself: summary, bound and where it came from, the token table
(oracle log-probability of the runtime's token, near ties), the artifact and the calls.

The fast twin of test_plugin_run's pytester projects (slow), on the record alone.
"""

from __future__ import annotations

from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult, TokenRow, render_table

CASE = Case("token", "tiny-llama", "transformers", "bfloat16", "code")
ROWS = (
    TokenRow(5, 1002, " x", 1003, " y", -0.25, None, near_tie=True, margin=0.012),
    TokenRow(6, 7, " a", 8, " b", None, -9.0, near_tie=False, margin=None),
    TokenRow(7, None, "", 9, " c", None, None, near_tie=False, margin=None),
)


def failed(bound_origin: str = "", summary: str = "27/32 positional mismatches > 3"
           ) -> SuiteResult:
    return SuiteResult(CASE, False, summary, measured=27, bound=3, bound_origin=bound_origin,
                       first_divergence=5, rows=ROWS, artifact="/cache/tiny-llama/model",
                       calls=("AutoModelForCausalLM.generate(...)",), notes=("a note",))


def test_the_explanation_names_bound_table_artifact_and_calls() -> None:
    lines = failed().explain().splitlines()
    assert lines[:4] == [
        "token[tiny-llama-transformers-bfloat16-code]: 27/32 positional mismatches > 3",
        "  bound: 3 (default)",
        "  first divergence at position 5",
        "  note: a note",
    ]
    header = next(i for i, line in enumerate(lines) if "oracle logp(runtime)" in line)
    assert lines[header].split()[:3] == ["pos", "oracle", "id"]
    row5, row6 = lines[header + 2], lines[header + 3]  # after the header and its rule
    assert row5.split()[:2] == ["5", "1002"]
    assert "-0.250" in row5
    assert "yes (margin 0.012)" in row5
    assert "< -9.00" in row6  # outside the oracle's top-k: below its k-th
    assert lines[-2:] == ["  artifact: /cache/tiny-llama/model",
                          "  output of: AutoModelForCausalLM.generate(...)"]


def test_a_justified_bound_says_where_it_came_from() -> None:
    text = failed("groundtruth.toml: random weights: near-flat logits").explain()
    assert "  bound: 3 (groundtruth.toml: random weights: near-flat logits)" in text
    # a summary that already names the divergence does not repeat it
    assert "\n  first divergence" not in failed(
        summary="27/32 mismatches; first divergence at position 5").explain()


def test_the_table_marks_unknown_ids_and_log_probabilities() -> None:
    header, _rule, *body = render_table(ROWS)
    assert "oracle logp(runtime)" in header
    assert "near tie" in header
    assert body[2].split()[:2] == ["7", "-"]  # the oracle ended before the runtime
    assert "?" in body[2]


def test_the_record_travels_as_json_and_back() -> None:
    result = failed("pyproject.toml")
    assert SuiteResult.from_dict(result.to_dict()) == result
