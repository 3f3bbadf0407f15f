"""Tokenizer parity: the engine's own tokenizer against the reference (transformers) one.

The engine encodes each text (the project's prompts plus :data:`BATTERY`, strings chosen
to break tokenizers: scripts and accents, emoji with joiners and flags, whitespace runs,
digits, code, and the model's own special-token text) and must produce exactly the
reference's ids, BOS included where the reference adds one; it must then decode the
reference's ids to the reference's text (special tokens skipped, as
``decode(skip_special_tokens=True)``).

:class:`TokenizerFacts` are what the metadata check needs from the reference: the
special ids and whether BOS/EOS are added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_groundtruth.integrity.findings import TokenizerFinding

BATTERY: tuple[str, ...] = (
    "Hello, world!",
    "  two leading spaces",
    "trailing spaces   ",
    "a  b   c    d     e",
    "tabs\tand\t\tmore tabs",
    "line one\nline two\n\nline four\r\nwindows line",
    "\n\n\nthree newlines first",
    "1234567890 3.14159 -42 1,000,000 2026-11-22 0x1F 1e-5",
    "99 bottles, 100% sure, 12:30pm, v1.2.3",
    "café naïve façade Ångström Øresund",
    "日本語のテキスト、中文字符。",
    "Привет, мир! Ελληνικά γράμματα.",
    "مرحبا بالعالم हिन्दी भाषा",
    "emoji 🚀🦙 family 👩‍👩‍👧‍👦 flag 🇫🇷 heart ❤️",
    "combining e\u0301 vs precomposed é, zero\u200bwidth, non\u00a0breaking",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1)\n",
    "if (a != b && c <= d) { x += 1; } // comment",
    "<div class=\"x\">&amp;</div> https://example.com/a?b=1&c=2#d",
    "don't won't I'm you're y'all",
    "MiXeD CaSe WORDS and UPPERCASE",
    "repeated " + "la" * 20,
    "$100.00 €50 £20 ¥1000",
)
SPECIAL_LIMIT = 8  # special tokens of the model embedded in text (at most this many)


@dataclass(frozen=True)
class TokenizerFacts:
    """The reference tokenizer's special ids and what it adds to a plain encode."""

    bos_id: int | None
    eos_ids: tuple[int, ...]
    pad_id: int | None
    adds_bos: bool
    adds_eos: bool
    special_tokens: tuple[str, ...] = ()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ids(value: Any) -> tuple[int, ...]:
    if _int(value) is not None:
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if _int(v) is not None)
    return ()


def reference_facts(tokenizer: Any, config: Mapping[str, Any]) -> TokenizerFacts:
    """Facts of a transformers tokenizer; ids it lacks come from config.json (as
    llama.cpp's converter does: tokenizer_config.json first, then config.json)."""
    bos = _int(tokenizer.bos_token_id)
    bos = bos if bos is not None else _int(config.get("bos_token_id"))
    eos = _ids(tokenizer.eos_token_id) or _ids(config.get("eos_token_id"))
    pad = _int(tokenizer.pad_token_id)
    pad = pad if pad is not None else _int(config.get("pad_token_id"))
    with_special = [int(t) for t in tokenizer("hello world")["input_ids"]]
    plain = [int(t) for t in tokenizer("hello world", add_special_tokens=False)["input_ids"]]
    adds_bos = bos is not None and with_special[:1] == [bos] and plain[:1] != [bos]
    adds_eos = bool(with_special) and with_special[-1] in eos and plain[-1:] != with_special[-1:]
    specials = tuple(str(t) for t in getattr(tokenizer, "all_special_tokens", []) if t)
    return TokenizerFacts(bos, eos, pad, adds_bos, adds_eos, specials)


UNICODE_FORMS = frozenset({"NFC", "NFD", "NFKC", "NFKD"})


def normalizer_of(tokenizer: Any) -> Callable[[str], str] | None:
    """The reference's Unicode normalization (NFC, NFKC, ...), when that is all its
    normalizer does; None otherwise (a lowercasing or accent-stripping normalizer is
    something a GGUF can declare, so a difference there stays a failure)."""
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if backend is None or normalizer is None:
        return None
    spec = json.loads(backend.to_str()).get("normalizer") or {}
    parts = spec.get("normalizers", []) if spec.get("type") == "Sequence" else [spec]
    if not parts or any(p.get("type") not in UNICODE_FORMS for p in parts):
        return None

    def normalize(text: str) -> str:
        return str(normalizer.normalize_str(text))

    return normalize


def texts(prompts: Iterable[str], facts: TokenizerFacts | None = None) -> list[str]:
    """The prompts, the battery, and the model's special tokens inside text."""
    out = list(dict.fromkeys([*prompts, *BATTERY]))
    for token in (facts.special_tokens if facts else ())[:SPECIAL_LIMIT]:
        out.append(f"before{token}after {token}\n")
    if facts and len(facts.special_tokens) >= 2:
        a, b = facts.special_tokens[:2]
        out.append(f"{a}user\nWhat is 2+2?{b}\n{a}assistant\n")
    return out


def compare_tokenizers(
    samples: Sequence[str],
    reference_encode: Callable[[str], Sequence[int]],
    reference_decode: Callable[[Sequence[int]], str],
    engine_encode: Callable[[str], Sequence[int]],
    engine_decode: Callable[[Sequence[int]], str] | None,
    normalize: Callable[[str], str] | None = None,
) -> list[TokenizerFinding]:
    """Every sample the engine encodes (or decodes) differently from the reference.

    ``normalize`` is the reference's Unicode normalizer (Qwen2's NFC, say): a sample
    whose engine ids match once the text is normalized first is a "normalization"
    finding, which the report lists without failing (the engine has no such step; no
    conversion can supply one).
    """
    findings: list[TokenizerFinding] = []
    for text in samples:
        want = tuple(int(t) for t in reference_encode(text))
        got = tuple(int(t) for t in engine_encode(text))
        if want != got:
            normal = normalize(text) if normalize is not None else text
            fixed = (tuple(int(t) for t in engine_encode(normal)) if normal != text
                     else None)
            kind = "normalization" if fixed == want else "encode"
            findings.append(TokenizerFinding(text, kind, want, got))
            continue
        if engine_decode is not None:
            expected_text, actual_text = reference_decode(want), engine_decode(want)
            if expected_text != actual_text:
                findings.append(TokenizerFinding(text, "decode", want, got, expected_text,
                                                 actual_text))
    return findings
