"""Noise or a changed reference: how regenerated oracles are compared with committed ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_groundtruth.oracle.diff import compare_oracles, compare_records, compare_texts

ROOT = Path(__file__).parents[2]


def committed(name: str = "completion") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (ROOT / "oracle" / "smollm2-135m" / f"{name}.json").read_text())
    return data


def test_identical_documents_differ_by_nothing() -> None:
    diff = compare_oracles(committed(), committed())
    assert diff.within(0.0)
    assert diff.numeric == 0.0


@given(position=st.integers(0, 31), shift=st.floats(1e-7, 1.0))
def test_a_log_probability_shift_is_numeric_and_measured(position: int, shift: float) -> None:
    old, new = committed(), committed()
    position %= len(new["topk"])
    new["topk"][position]["logprobs"] = [x - shift for x in new["topk"][position]["logprobs"]]
    diff = compare_oracles(old, new)
    assert not diff.structural
    assert diff.numeric == pytest.approx(shift, rel=1e-6, abs=1e-9)
    assert diff.within(shift * 1.01)
    assert not diff.within(shift * 0.5)
    assert f"position {position}" in diff.detail


@given(position=st.integers(0, 31), token=st.integers(0, 49151))
def test_a_changed_token_is_never_noise(position: int, token: int) -> None:
    old, new = committed(), committed()
    position %= len(new["tokens"])
    if new["tokens"][position] == token:
        token += 1
    new["tokens"][position] = token
    diff = compare_oracles(old, new)
    assert diff.structural
    assert not diff.within(float("inf"))
    assert diff.detail.startswith(f"tokens differ first at position {position}")


def test_a_reorder_of_equal_entries_is_noise_but_a_new_id_is_not() -> None:
    old = committed()
    step = old["topk"][3]
    step["logprobs"][1] = step["logprobs"][2] = -2.5
    swapped = copy.deepcopy(old)
    ids = swapped["topk"][3]["ids"]
    ids[1], ids[2] = ids[2], ids[1]
    assert compare_oracles(old, swapped).within(0.0)

    replaced = copy.deepcopy(old)
    replaced["topk"][3]["ids"][1] = 12345
    diff = compare_oracles(old, replaced)
    assert diff.structural
    assert "top-k ids differ at position 3" in diff.detail


def test_an_id_leaving_the_top_k_at_its_edge_is_noise() -> None:
    old = committed()
    lowest = old["topk"][7]["logprobs"][-1]
    old["topk"][7]["logprobs"][-2] = lowest
    edge = copy.deepcopy(old)
    edge["topk"][7]["ids"][-1] = 777  # the k-th and (k+1)-th candidates tie
    edge["topk"][7]["logprobs"][-1] = lowest - 1e-6
    assert compare_oracles(old, edge).within(1e-5)


def test_versions_are_reported_but_other_fields_are_structural() -> None:
    old, new = committed(), committed()
    new["transformers_version"] = "99.0"
    diff = compare_oracles(old, new)
    assert diff.within(0.0)
    assert diff.detail == "tokens and top-k identical; transformers_version '5.24.0' -> '99.0'"
    record = json.loads((ROOT / "oracle" / "smollm2-135m" / "eval" / "perplexity.json")
                        .read_text())
    assert compare_records(record, {**record, "torch_version": "9"}).detail == \
        "values identical; torch_version '2.13.0+cpu' -> '9'"

    new["model_fingerprint"] = "0" * 64
    diff = compare_oracles(old, new)
    assert diff.structural
    assert "model_fingerprint" in diff.detail


def test_perplexity_records_compare_relatively() -> None:
    path = ROOT / "oracle" / "smollm2-135m" / "eval" / "perplexity.json"
    old = json.loads(path.read_text())
    new = dict(old, perplexity=old["perplexity"] * (1 + 1e-6))
    diff = compare_records(old, new)
    assert diff.within(1.1e-6)
    assert not diff.within(0.9e-6)
    assert not compare_records(old, dict(old, tokens_evaluated=1)).within(1.0)
    text = json.dumps(old)
    assert compare_texts(text, json.dumps(new)).within(1e-5)
    assert compare_texts("{", text).structural


OLDER = ROOT / "tests" / "data" / "oracle-v1" / "tiny-llama"


def test_another_schema_is_structural_and_says_what_moved() -> None:
    """Rewriting our older files (or the original's) needs --force, and the report says
    the tokens did not change: only the format and the recorded versions."""
    new = (ROOT / "oracle" / "tiny-llama" / "code.json").read_text()
    diff = compare_texts((OLDER / "code.json").read_text(), new)
    assert diff.structural
    assert diff.numeric == 0.0
    assert diff.detail.startswith("tokens identical; schema pytest-groundtruth/oracle/1 -> "
                                  "pytest-groundtruth/oracle/2; fields added: format, "
                                  "model_slug, seal, source, token_count; removed: dtype, slug")
    assert "transformers_version '5.23.0' -> '5.24.0'" in diff.detail
    shifted = json.loads(new)
    shifted["tokens"][4] += 1
    assert compare_texts((OLDER / "code.json").read_text(), json.dumps(shifted)).detail \
        .startswith("tokens differ first at position 4")
    record = compare_texts((OLDER / "eval" / "perplexity.json").read_text(),
                           (ROOT / "oracle" / "tiny-llama" / "eval" / "perplexity.json")
                           .read_text())
    assert record.structural
    assert record.detail.startswith("values identical; schema "
                                    "pytest-groundtruth/oracle-perplexity/1 -> ")
