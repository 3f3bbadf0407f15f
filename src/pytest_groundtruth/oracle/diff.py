"""How a regenerated oracle file differs from the committed one, and whether that matters.

Regenerating on the same machine reproduces an oracle byte for byte. On another CPU the
float32 kernels differ (AVX2 vs AVX-512/AMX, a different BLAS path), and the stored
log-probabilities move in the sixth decimal while every token stays the same. That is
noise, not a changed reference: :meth:`Difference.within` separates the two, given a
tolerance in nats (log-probabilities and cross-entropy share that unit).

* structural: tokens, prompt tokens, top-k ids that are not a reorder of near-equal
  entries, or any field other than the numeric and version ones. Never noise.
* numeric: the largest log-probability (or cross-entropy, or relative perplexity) change.
* informative: library versions. Reported, never a difference on their own; the
  numbers they produce are what is compared.
* format: a file of another schema (the original workflow's, or this project's older
  one) is structural too, so rewriting it takes ``--force``; the detail still says
  whether the tokens and log-probabilities changed, and which fields were added or
  renamed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pytest_groundtruth.measures.sequences import first_divergence

# Measured 2026-11-30: oracles written on one x86-64 machine and regenerated on a Sapphire
# Rapids one (AVX-512, AMX), torch 2.13.0 both times, moved by at most 3.4e-5 nats
# (smollm2-135m, code prompt) and 7e-6 (tiny models), every token equal. About six times that:
CROSS_MACHINE_TOLERANCE = 2e-4

VERSION_FIELDS = frozenset({"transformers_version", "torch_version"})
# Fields recomputed from others: a change follows from a numeric or structural one (the
# seal is a hash of the generated part, so log-probabilities within the tolerance move it).
DERIVED_FIELDS = frozenset({"near_ties", "text", "token_count", "seal"})
NUMERIC_FIELDS = frozenset({"topk", "perplexity", "cross_entropy"})


@dataclass(frozen=True)
class Difference:
    """One line for humans plus what decides whether a tolerance covers it."""

    detail: str
    numeric: float = 0.0
    structural: bool = False

    def within(self, tolerance: float) -> bool:
        return not self.structural and self.numeric <= tolerance


def _show(token: int | None, decode: Any) -> str:
    if token is None:
        return "(end)"
    return f"{token} {decode([token])!r}" if decode else str(token)


def _token_change(old: list[int], new: list[int], decode: Any) -> str:
    pos = first_divergence(old, new)
    assert pos is not None, "called only for sequences that differ"
    before = old[pos] if pos < len(old) else None
    after = new[pos] if pos < len(new) else None
    return (
        f"tokens differ first at position {pos}: committed {_show(before, decode)} -> "
        f"regenerated {_show(after, decode)} ({len(old)} -> {len(new)} tokens)"
    )


def _step_delta(old: dict[str, Any], new: dict[str, Any]) -> float | None:
    """Largest log-probability change at one position; None when the ids really differ.

    Ids that swap places are a reorder of entries within the delta of each other, and an
    id that leaves the top-k at its edge is replaced by one of equal log-probability: both
    count as numeric, measured on the sorted values and on every id both sides hold.
    """
    a: dict[int, float] = dict(zip(old["ids"], old["logprobs"], strict=False))
    b: dict[int, float] = dict(zip(new["ids"], new["logprobs"], strict=False))
    if len(a) != len(b):
        return None
    delta = max((abs(x - y) for x, y in zip(sorted(a.values()), sorted(b.values()),
                                              strict=True)), default=0.0)
    shared = a.keys() & b.keys()
    delta = max([delta, *(abs(a[i] - b[i]) for i in shared)])
    if old["ids"] != new["ids"]:
        edge = min(a.values(), default=0.0)
        for i in a.keys() ^ b.keys():
            value = a.get(i, b.get(i))
            assert value is not None
            if abs(value - edge) > 2 * delta + 1e-12:
                return None
    return delta


def compare_oracles(old: dict[str, Any], new: dict[str, Any], decode: Any = None) -> Difference:
    """Compare two oracle JSON documents (the generation record)."""
    if old.get("tokens") != new.get("tokens"):
        return Difference(_token_change(old.get("tokens") or [], new.get("tokens") or [],
                                        decode), structural=True)
    schema = _schema_change(old, new)
    if ("prompt_tokens" in old and "prompt_tokens" in new
            and old["prompt_tokens"] != new["prompt_tokens"]):
        return Difference(f"prompt tokens differ: {old.get('prompt_tokens')} -> "
                          f"{new.get('prompt_tokens')}", structural=True)
    worst, where = 0.0, -1
    old_steps, new_steps = old.get("topk"), new.get("topk")
    if old_steps is not None and new_steps is not None:
        if len(old_steps) != len(new_steps):
            return Difference(f"top-k has {len(old_steps)} -> {len(new_steps)} positions",
                              structural=True)
        for i, (a, b) in enumerate(zip(old_steps, new_steps, strict=True)):
            delta = _step_delta(a, b)
            if delta is None:
                return Difference(f"tokens identical; top-k ids differ at position {i}: "
                                  f"{a['ids']} -> {b['ids']}", structural=True)
            if delta > worst:
                worst, where = delta, i
    parts = ["tokens identical"] if worst or schema else []
    if worst:
        parts.append(f"top-k log-probabilities differ by up to {worst:.2g} (position {where})")
    if schema:
        return Difference("; ".join([*parts, schema, *_version_notes(old, new)]), worst,
                          structural=True)
    others = _other_fields(old, new)
    if others:  # whether the tokens moved is the first thing a reader asks (other weights)
        return Difference("; ".join([*(parts or ["tokens and top-k ids identical"]), others]),
                          worst, structural=True)
    versions = _version_notes(old, new)
    if not parts and versions:  # what a reference upgrade that changes nothing looks like
        parts = ["tokens and top-k identical"]
    parts = ["; ".join(parts)] if parts else []
    return Difference("; ".join([*parts, *versions]) or "formatting only", worst)


def _schema_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'' when both files have one schema; else the schemas and the fields that differ."""
    if old.get("schema") == new.get("schema"):
        return ""
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    changed = sorted(k for k in old.keys() & new.keys() - {"schema"} - VERSION_FIELDS
                     - NUMERIC_FIELDS if old[k] != new[k])
    text = f"schema {old.get('schema', 'none (original format)')} -> {new.get('schema')}"
    for label, names in (("fields added", added), ("removed", removed)):
        if names:
            text += f"; {label}: {', '.join(names)}"
    if changed:
        text += "; changed: " + ", ".join(f"{k} ({old[k]!r} -> {new[k]!r})" for k in changed)
    return text


def compare_records(old: dict[str, Any], new: dict[str, Any]) -> Difference:
    """Compare two perplexity records: cross-entropy in nats, perplexity relatively."""
    numeric = 0.0
    notes = []
    for key in ("perplexity", "cross_entropy"):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            return Difference(f"field {key}: {a!r} -> {b!r}", structural=True)
        change = abs(a - b) / abs(a) if key == "perplexity" and a else abs(a - b)
        numeric = max(numeric, change)
        notes.append(f"{key} ({a!r} -> {b!r})")
    schema = _schema_change(old, new)
    if schema:
        shown = f"values changed: {', '.join(notes)}" if notes else "values identical"
        return Difference(f"{shown}; {schema}", numeric, structural=True)
    others = _other_fields(old, new)
    if others:
        return Difference(others, numeric, structural=True)
    versions = _version_notes(old, new)
    if not notes:
        return Difference("; ".join(["values identical", *versions]) if versions
                          else "formatting only", numeric)
    return Difference("fields changed: " + ", ".join([*notes, *versions]), numeric)


def compare_texts(old_text: str, new_text: str, decode: Any = None) -> Difference:
    """Compare two oracle files' texts (either kind); unparseable old text is structural."""
    try:
        old = json.loads(old_text)
    except ValueError as exc:
        return Difference(f"unreadable: {exc}", math.inf, structural=True)
    new = json.loads(new_text)
    if "topk" in new:
        return compare_oracles(old, new, decode)
    return compare_records(old, new)


def _other_fields(old: dict[str, Any], new: dict[str, Any]) -> str:
    skip = VERSION_FIELDS | DERIVED_FIELDS | NUMERIC_FIELDS | {"tokens", "prompt_tokens"}
    changed = [k for k in sorted(old.keys() | new.keys())
               if k not in skip and old.get(k) != new.get(k)]
    return "fields changed: " + ", ".join(
        f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed) if changed else ""


def _version_notes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(VERSION_FIELDS)
            if old.get(k) != new.get(k)]
