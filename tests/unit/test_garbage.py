"""The garbage detector (gateway G4): clean on every committed oracle, and each rule fires
where it should, saying which rule and where.

Property-based with hypothesis: the committed oracles (the embedded SmolLM2 and three
random tiny models) are the calibration set of clean text; a token repeated 32 times and
random byte soup are garbage whatever the token, the prefix or the bytes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pytest_groundtruth.measures.garbage import (
    MIN_TOKENS,
    REPETITION_SHARE,
    GarbageVerdict,
    detect,
    is_control,
    longest_repeat,
)
from pytest_groundtruth.oracle.format import Oracle, load_oracle

ROOT = Path(__file__).parents[2]
ORACLES = sorted((ROOT / "oracle").glob("*/*.json"))
SPECIAL = frozenset(range(17))  # the embedded SmolLM2 tokenizer's special tokens (0-16)
VOCAB = 49152


def load(path: Path) -> Oracle:
    return load_oracle(path)


def verdict_of(path: Path, **overrides: Any) -> GarbageVerdict:
    oracle = load(path)
    kwargs: dict[str, Any] = {
        "logprobs": [s.logprobs for s in oracle.steps],
        "special_ids": SPECIAL,
        "stopped_at_eos": oracle.stop_reason == "eos",
        **overrides,
    }
    tokens = kwargs.pop("tokens", oracle.tokens)
    text = kwargs.pop("text", oracle.text)
    return detect(tokens, text, **kwargs)


def test_the_oracles_are_there() -> None:
    assert len(ORACLES) >= 16  # 4 models x 4 prompts


@pytest.mark.parametrize("path", ORACLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_committed_oracle_is_not_garbage(path: Path) -> None:
    verdict = verdict_of(path)
    assert not verdict.garbage, str(verdict)
    # ... also when judged against its own text as the reference
    assert not verdict_of(path, reference=load(path).text).garbage


@given(path=st.sampled_from(ORACLES), cut=st.integers(MIN_TOKENS, 32))
def test_no_prefix_of_an_oracle_is_repetitive(path: Path, cut: int) -> None:
    tokens = list(load(path).tokens)[:cut]
    findings = detect(tokens, "text", special_ids=SPECIAL).findings
    assert not [f for f in findings if f.rule in ("repetition", "special-flood")]


@given(token=st.integers(17, VOCAB - 1),
       prefix=st.lists(st.integers(17, VOCAB - 1), max_size=6))
def test_a_token_repeated_32_times_is_garbage(token: int, prefix: list[int]) -> None:
    tokens = [*prefix, *[token] * 32]
    verdict = detect(tokens, "word " * len(tokens))
    rules = {f.rule: f for f in verdict.findings}
    assert "repetition" in rules, str(verdict)
    found = rules["repetition"]
    assert found.unit == "token"
    # it says where: the run starts at or before the first repeat, inside the prefix's tail
    assert found.position <= len(prefix)
    assert set(tokens[found.position:]) == {token}
    assert f"[{token}]" in found.detail


@given(gram=st.lists(st.integers(17, VOCAB - 1), min_size=2, max_size=4, unique=True),
       repeats=st.integers(8, 16))
def test_a_short_ngram_repeated_through_the_output_is_garbage(gram: list[int],
                                                              repeats: int) -> None:
    verdict = detect(gram * repeats, "some text")
    assert [f.rule for f in verdict.findings] == ["repetition"]
    assert f"{len(gram)}-gram" in verdict.findings[0].detail


@given(token=st.sampled_from(sorted(SPECIAL)), filler=st.integers(17, VOCAB - 1))
def test_a_flood_of_one_special_token_is_garbage(token: int, filler: int) -> None:
    tokens = [filler, token] * 8  # interleaved: no repeat of one token, half special
    verdict = detect(tokens, "word " * 16, special_ids=SPECIAL)
    flood = [f for f in verdict.findings if f.rule == "special-flood"]
    assert flood, str(verdict)
    assert flood[0].position == 1


@settings(max_examples=200)
@given(seed=st.integers(0, 2**63), path=st.sampled_from(ORACLES))
def test_random_byte_soup_is_garbage(seed: int, path: Path) -> None:
    # Uniformly random bytes (hypothesis varies the seed, not the bytes): the chance that
    # 64 of them decode as UTF-8 with fewer than 3 control characters is below 1e-20.
    reference = load(path).text
    # A random model's oracle may itself hold U+FFFD or control characters: the detector
    # then (rightly) does not count them, and the property is about the others.
    assume("\ufffd" not in reference and not any(is_control(c) for c in reference))
    soup = random.Random(seed).randbytes(64)
    text = soup.decode("utf-8", errors="replace")
    verdict = detect(list(soup), text, reference=reference)
    rules = {f.rule for f in verdict.findings}
    assert rules & {"replacement-character", "control-character"}, (soup, str(verdict))
    for f in verdict.findings:
        if f.unit == "character":
            assert text[f.position] == "\ufffd" or is_control(text[f.position])


@given(path=st.sampled_from(ORACLES), char=st.sampled_from(["\x00", "\x01", "\x1b", "\ufffd"]))
def test_characters_the_oracle_lacks_fire_at_their_offset(path: Path, char: str) -> None:
    text = load(path).text
    assume(char not in text)  # a random model's oracle may hold U+FFFD itself
    at = len(text) // 2
    dirty = text[:at] + char * 3 + text[at:]
    verdict = verdict_of(path, text=dirty, reference=text)
    hits = [f for f in verdict.findings if f.unit == "character"]
    assert hits, str(verdict)
    assert hits[0].position == at
    assert hits[0].rule == ("replacement-character" if char == "\ufffd" else "control-character")


def test_a_stray_character_or_a_cut_one_is_not_garbage() -> None:
    # one stray byte token in a long text (seen from a correct conversion of a random model)
    text = "word " * 30 + "\x01" + " more words"
    assert not detect(list(range(100, 132)), text, reference="clean").garbage
    # a generation cut by the token limit in the middle of a character
    assert not detect([100, 101, 102], "ab\ufffd").garbage
    assert detect([100, 101, 102], "ab\ufffd",
                  stopped_at_eos=True).findings[0].rule == "replacement-character"


def test_characters_the_oracle_has_are_not_held_against_the_engine() -> None:
    text = "a\x1bb\x1bc\x1bd"
    assert detect([5, 6, 7, 8, 9], text).garbage
    assert not detect([5, 6, 7, 8, 9], text, reference="x\x1by").garbage


def test_empty_output() -> None:
    assert detect([], "").findings[0].rule == "empty"
    # an EOS-only answer is fine on its own (the embedded model's arithmetic oracle) ...
    assert not detect([2], "", stopped_at_eos=True).garbage
    # ... but not where the oracle answered with text, nor whitespace that ran to the limit
    assert detect([2], "", stopped_at_eos=True, reference=" Paris.").findings[0].rule == "empty"
    assert detect([198] * 3, "\n\n\n").findings[0].rule == "empty"


def test_non_finite_logprobs_name_the_step() -> None:
    verdict = detect([5, 6, 7], "abc", logprobs=[[-0.1, -2.0], [-0.5, float("nan")], [0.0]])
    assert [(f.rule, f.position, f.unit) for f in verdict.findings] == [("non-finite", 1, "step")]
    assert not detect([5], "a", logprobs=[[-0.1, -1e9]]).garbage


def test_repetition_needs_most_of_the_output() -> None:
    varied = list(range(100, 120))
    assert not detect([*varied, *[7] * 10], "x").garbage  # 11/30 < 70 %
    n = 30
    run = int(REPETITION_SHARE * n) + 1
    assert detect([*list(range(100, 100 + n - run)), *[7] * run], "x").garbage
    assert not detect([7] * (MIN_TOKENS - 1), "x").garbage  # too short to judge


def test_longest_repeat() -> None:
    assert longest_repeat([1, 2, 1, 2, 1, 2, 3], 2) == (0, 6)
    assert longest_repeat([9, 5, 5, 5, 5], 1) == (1, 4)
    assert longest_repeat([1, 2, 3], 1) == (0, 1)


@pytest.mark.parametrize("text", ["NaN", " nan\n", "-Inf", "inf"])
def test_a_text_that_is_only_nan_or_inf_is_garbage(text: str) -> None:
    found = detect([5, 6], text).findings
    assert [(f.rule, f.position) for f in found] == [("non-finite", 0)]
    assert not detect([5, 6], text, reference=text).garbage
    assert not detect([5, 6], "the NaN value").garbage
