"""Prompt-token parity: did the runtime consume the prompt the oracle consumed?

Every generation-based check compares continuations, which only means something when
both sides continued the same token sequence. A converter that makes the engine add a
BOS token, drop one, or split the text with another pre-tokenizer changes the prompt
before a single weight is used; the continuation may even come out the same. This
compares the prompt token ids a runtime reports with the oracle's ``prompt_tokens`` and
names the first difference (and, where it is one, the kind: a token added or missing
at the start, as with BOS).

A runtime that does not report its prompt ids (``Generation.prompt_tokens`` empty: the
apr CLI) cannot be checked; :func:`prompt_difference` says so with ``None`` and the
caller notes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_groundtruth.measures.sequences import first_divergence


@dataclass(frozen=True)
class PromptDifference:
    position: int  # the first prompt position where the ids differ
    oracle_id: int | None  # None: the runtime's prompt is longer
    runtime_id: int | None  # None: the runtime's prompt is shorter
    oracle_length: int
    runtime_length: int
    kind: str  # "added at the start", "missing at the start", "differs", ...

    def describe(self, decode: Callable[[int], str] | None = None) -> str:
        """One line: the kind, the position and both ids (with text when ``decode`` is a
        ``token id -> text`` callable)."""

        def show(token: int | None) -> str:
            if token is None:
                return "nothing"
            return f"{token} {decode(token)!r}" if decode is not None else str(token)

        return (f"prompt tokens differ from the oracle's at position {self.position} "
                f"({self.kind}): runtime {show(self.runtime_id)}, oracle "
                f"{show(self.oracle_id)} ({self.runtime_length} vs {self.oracle_length} "
                "prompt tokens)")


def prompt_difference(oracle: Sequence[int], runtime: Sequence[int]
                      ) -> PromptDifference | None:
    """The first difference between the runtime's prompt ids and the oracle's, or None
    when they are identical or the runtime reported none (it cannot be checked)."""
    if not runtime:
        return None
    pos = first_divergence(oracle, runtime)
    if pos is None:
        return None
    oracle_id = oracle[pos] if pos < len(oracle) else None
    runtime_id = runtime[pos] if pos < len(runtime) else None
    if len(runtime) == len(oracle) + 1 and list(runtime[1:]) == list(oracle):
        kind = "a token added at the start, as a BOS would be"
    elif len(oracle) == len(runtime) + 1 and list(oracle[1:]) == list(runtime):
        kind = "the first token missing, as a BOS would be"
    elif list(runtime[:len(oracle)]) == list(oracle):
        kind = f"{len(runtime) - len(oracle)} token(s) added at the end"
    elif list(oracle[:len(runtime)]) == list(runtime):
        kind = f"{len(oracle) - len(runtime)} token(s) missing at the end"
    else:
        kind = "the text is split into other tokens"
    return PromptDifference(pos, oracle_id, runtime_id, len(oracle), len(runtime), kind)
