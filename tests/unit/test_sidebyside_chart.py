"""The side-by-side view and its SVG chart, on the committed oracle of the embedded model.

The runtime side is the oracle's own tokens with one changed: to the oracle's runner-up
at its first near tie (a legitimate flip: the oracle knows its log-probability), or to a
token outside the oracle's top-k (known only to lie below the k-th value).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_groundtruth.oracle.format import Oracle, load_oracle
from pytest_groundtruth.report.chart import svg
from pytest_groundtruth.report.sidebyside import (
    SideBySide,
    first_char_difference,
    html_view,
    marked,
    side_by_side,
)

ROOT = Path(__file__).parents[2]
NS = {"s": "http://www.w3.org/2000/svg"}


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return load_oracle(ROOT / "oracle" / "smollm2-135m" / "greeting.json")


def view_of(oracle: Oracle, tokens: list[int], text: str = "x") -> SideBySide:
    return side_by_side("rt/int8", oracle, tokens, text, lambda t: f"<{t}>")


def test_identical(oracle: Oracle) -> None:
    view = view_of(oracle, list(oracle.tokens), oracle.text)
    assert view.first_divergence is None
    assert view.first_char is None
    assert view.agreed == view.compared == len(oracle.tokens)
    assert view.agreement_line() == f"identical ({len(oracle.tokens)}/{len(oracle.tokens)} " \
        "positions agree)"
    root = ET.fromstring(svg(view))
    assert not root.findall(".//s:line[@class='first-divergence']", NS)
    assert len(root.findall(".//s:circle", NS)) == len(oracle.tokens) + 1  # + legend
    assert len(root.findall(".//s:rect[@class='near-tie']", NS)) == len(oracle.near_ties)


def test_a_near_tie_flip(oracle: Oracle) -> None:
    at = oracle.near_ties[0]
    tokens = list(oracle.tokens)
    tokens[at] = oracle.steps[at].ids[1]  # the runner-up
    view = view_of(oracle, tokens[: at + 1])
    assert view.first_divergence == at
    flip = view.positions[at]
    assert flip.near_tie
    assert flip.runtime_logprob == oracle.steps[at].logprobs[1]
    assert flip.oracle_logprob == oracle.steps[at].logprobs[0]
    assert view.agreed == at
    assert view.positions[at + 1].runtime_id is None  # the runtime stopped there
    root = ET.fromstring(svg(view))
    (line,) = root.findall(".//s:line[@class='first-divergence']", NS)
    (title,) = line.findall("s:title", NS)
    assert title.text == f"first divergence at position {at}"
    tips = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(f"position {at}: runtime token '<{tokens[at]}>', oracle log p "
               f"{oracle.steps[at].logprobs[1]:.3f}" in t for t in tips)


def test_a_token_outside_the_oracles_top_k(oracle: Oracle) -> None:
    tokens = list(oracle.tokens)
    outsider = next(t for t in range(100, 1000) if t not in oracle.steps[3].ids)
    tokens[3] = outsider
    view = view_of(oracle, tokens)
    assert view.positions[3].runtime_logprob is None
    assert view.positions[3].floor == oracle.steps[3].logprobs[-1]
    root = ET.fromstring(svg(view))
    below = root.findall(".//s:path[@class='below-topk']", NS)
    assert len(below) >= 1
    assert "outside its top-k" in (below[0].find("s:title", NS).text or "")  # type: ignore[union-attr]


def test_the_view_marks_where_the_texts_part() -> None:
    assert first_char_difference("abc", "abc") is None
    assert first_char_difference("abcd", "abXd") == 2
    assert first_char_difference("ab", "abc") == 2
    assert marked("abXd", 2) == "'ab⟦Xd'"
    assert marked("same", None) == "'same'"


def test_html_view_escapes_and_highlights(oracle: Oracle) -> None:
    view = view_of(oracle, list(oracle.tokens), oracle.text[:10] + "<b>&")
    page = html_view(view)
    assert "<mark>&lt;</mark>b&gt;&amp;" in page
    assert "<script" not in page


def test_json_round_trip(oracle: Oracle) -> None:
    view = view_of(oracle, list(oracle.tokens)[:5], "hello")
    assert SideBySide.from_json(view.to_json()) == view
