"""Is a generation garbage? The gateway's G4 rules, each reporting where it fired.

An engine that loads and answers can still answer with nothing a reader would call text.
The model QA playbooks call such output garbage and let it zero a model's qualification
score, whatever the other checks say. Six rules, checked on what a runner returns (token
ids, text, per-step log-probabilities), each documented with its threshold:

``empty``
    No tokens at all; or no visible text (empty or whitespace only) where the oracle's
    text has some. Without an oracle text: whitespace only and the generation did not
    stop at its end-of-sequence token (an instruct model may legitimately answer with
    EOS at once: the embedded model does on ``What is 2+2? Answer:``).
``non-finite``
    A NaN or an infinity among the log-probabilities the engine reported, or a text that
    is nothing but one (``NaN``, ``inf``: what an engine prints when its numbers broke)
    where the oracle's is not.
``replacement-character`` / ``control-character``
    U+FFFD (what undecodable bytes become) or a control character (Unicode category Cc
    other than ``\\n``, ``\\t``, ``\\r``) that the oracle's text does not contain itself,
    at least :data:`MIN_BAD_CHARS` times or as at least :data:`BAD_CHAR_SHARE` of the
    characters. One stray byte token in a long text is a wrong token, which the parity
    suites judge, not unreadable output: the random tiny models emit one now and then
    (a lone U+0001 in 160 characters), and so may a correct conversion of them. A U+FFFD
    that ends a generation cut off by the token limit is a character cut in half, and is
    not counted.
``repetition``
    One token or a short n-gram (period 1 to :data:`MAX_PERIOD` tokens) repeated at least
    :data:`MIN_REPEATS` times, back to back, over at least :data:`REPETITION_SHARE` of the
    generated tokens (the playbook's ">= 3 times over >= 70 % of the text"). Judged only
    from :data:`MIN_TOKENS` tokens on. Longer periods are left alone: a small model that
    says "The answer is 4." four times is a weak model, not a broken engine.
``special-flood``
    One special token (pad, unk, eos, ...) making up at least :data:`FLOOD_SHARE` of the
    tokens, at least :data:`MIN_FLOOD` times.

The thresholds are the playbook's; the oracles the project commits (the embedded model
and three random tiny models) are all clean under them, and the test suite checks so.

Pure functions of plain values; nothing is loaded.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

MAX_PERIOD = 4  # longest repeated n-gram, in tokens
MIN_REPEATS = 3  # back-to-back repeats of it
REPETITION_SHARE = 0.7  # share of the generated tokens the repeats cover
MIN_TOKENS = 8  # shorter outputs are not judged for repetition
MIN_BAD_CHARS = 3  # U+FFFD / control characters the oracle lacks: this many ...
BAD_CHAR_SHARE = 0.1  # ... or this share of the text
FLOOD_SHARE = 0.5  # share of the tokens one special token may not reach ...
MIN_FLOOD = 3  # ... when it occurs at least this often
ALLOWED_CONTROLS = frozenset("\n\t\r")
REPLACEMENT = "\ufffd"

RULES = ("empty", "non-finite", "replacement-character", "control-character", "repetition",
         "special-flood")


@dataclass(frozen=True)
class Finding:
    """One rule that fired: which, where (a token index or a character offset), and why."""

    rule: str
    position: int
    unit: str  # "token", "character" or "step" (a generated position's log-probabilities)
    detail: str

    def __str__(self) -> str:
        return f"{self.rule} at {self.unit} {self.position}: {self.detail}"


@dataclass(frozen=True)
class GarbageVerdict:
    findings: tuple[Finding, ...]

    @property
    def garbage(self) -> bool:
        return bool(self.findings)

    def __str__(self) -> str:
        if not self.findings:
            return "not garbage"
        return "; ".join(str(f) for f in self.findings)


def detect(
    tokens: Sequence[int],
    text: str,
    *,
    logprobs: Sequence[Sequence[float]] | None = None,
    special_ids: Collection[int] = (),
    reference: str | None = None,
    stopped_at_eos: bool = False,
) -> GarbageVerdict:
    """Every garbage rule that fires on one generation.

    ``logprobs``: the per-step log-probabilities the engine reported (any shape per step);
    ``special_ids``: the tokenizer's special tokens; ``reference``: the oracle's text for
    the same prompt (characters it contains are not held against the engine);
    ``stopped_at_eos``: the generation ended with its end-of-sequence token.
    """
    found = [
        *_empty(tokens, text, reference, stopped_at_eos),
        *_non_finite(logprobs, text, reference),
        *_characters(text, reference, cut=not stopped_at_eos),
        *_repetition(tokens),
        *_flood(tokens, special_ids),
    ]
    return GarbageVerdict(tuple(found))


def _empty(tokens: Sequence[int], text: str, reference: str | None,
           stopped_at_eos: bool) -> list[Finding]:
    if not tokens:
        return [Finding("empty", 0, "token", "the engine generated no tokens")]
    if text.strip():
        return []
    if reference is not None and reference.strip():
        return [Finding("empty", 0, "character",
                        f"no visible text ({text!r}) where the oracle has {len(reference)} "
                        "characters")]
    if reference is None and not stopped_at_eos:
        return [Finding("empty", 0, "character",
                        f"only whitespace ({text!r}) in {len(tokens)} tokens, without "
                        "stopping at end-of-sequence")]
    return []


NON_FINITE_TEXTS = frozenset({"nan", "-nan", "inf", "+inf", "-inf", "infinity", "-infinity"})


def _non_finite(logprobs: Sequence[Sequence[float]] | None, text: str,
                reference: str | None) -> list[Finding]:
    word = text.strip().lower()
    if word in NON_FINITE_TEXTS and word != (reference or "").strip().lower():
        return [Finding("non-finite", 0, "character", f"the text is {text.strip()!r}")]
    for step, values in enumerate(logprobs or ()):
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            return [Finding("non-finite", step, "step",
                            f"{len(bad)} non-finite log-probabilit{'y' if len(bad) == 1 else 'ies'}"
                            f" ({bad[0]!r})")]
    return []


def is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc" and char not in ALLOWED_CONTROLS


def _characters(text: str, reference: str | None, cut: bool) -> list[Finding]:
    allowed = set(reference or "")
    # One trailing U+FFFD of a generation cut by the token limit: a character cut in half
    # (an incomplete UTF-8 sequence decodes to a single U+FFFD).
    judged = text[:-1] if cut and text.endswith(REPLACEMENT) else text
    found = []
    for rule, hit in (("replacement-character", lambda c: c == REPLACEMENT),
                      ("control-character", is_control)):
        offsets = [i for i, c in enumerate(judged) if hit(c) and c not in allowed]
        if offsets and (len(offsets) >= MIN_BAD_CHARS
                        or len(offsets) >= BAD_CHAR_SHARE * len(text)):
            first = text[offsets[0]]
            found.append(Finding(rule, offsets[0], "character",
                                 f"{len(offsets)} x U+{ord(first):04X} "
                                 f"({unicodedata.name(first, 'control')}) that the oracle's "
                                 "text does not have"))
    return found


def longest_repeat(tokens: Sequence[int], period: int) -> tuple[int, int]:
    """(start, length) of the longest span of ``tokens`` that repeats with ``period``
    (each token equal to the one ``period`` before it), at least one period long."""
    best_start, best_len = 0, min(period, len(tokens))
    run = 0
    for i in range(period, len(tokens)):
        run = run + 1 if tokens[i] == tokens[i - period] else 0
        if run + period > best_len:
            best_start, best_len = i - run - period + 1, run + period
    return best_start, best_len


def _repetition(tokens: Sequence[int]) -> list[Finding]:
    n = len(tokens)
    if n < MIN_TOKENS:
        return []
    need = math.ceil(REPETITION_SHARE * n)
    for period in range(1, MAX_PERIOD + 1):
        start, length = longest_repeat(tokens, period)
        if length >= max(need, MIN_REPEATS * period):
            unit = list(tokens[start:start + period])
            return [Finding("repetition", start, "token",
                            f"{'token' if period == 1 else f'{period}-gram'} {unit} repeated "
                            f"{length / period:.1f} times over {length}/{n} tokens "
                            f"(>= {REPETITION_SHARE:.0%})")]
    return []


def _flood(tokens: Sequence[int], special_ids: Collection[int]) -> list[Finding]:
    counts = Counter(t for t in tokens if t in special_ids)
    if not counts:
        return []
    token, count = counts.most_common(1)[0]
    if count >= MIN_FLOOD and count >= FLOOD_SHARE * len(tokens):
        first = list(tokens).index(token)
        return [Finding("special-flood", first, "token",
                        f"special token {token} is {count}/{len(tokens)} of the tokens "
                        f"(>= {FLOOD_SHARE:.0%})")]
    return []
