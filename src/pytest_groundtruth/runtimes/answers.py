"""Checks on what an engine answers, shared by every runtime that reads foreign output.

The command runtime (a tool's JSON) and the openai runtime (a server's JSON) read the same
things: token ids, log-probabilities, a stop reason. Each check here is pure and returns
``None`` or a problem ``(kind, sentence)``; the caller adds the tool or URL and raises.

* token ids are integers in ``[0, vocab)`` (a negative id ended in a 2000-line
  OverflowError from the tokenizer; an id equal to the vocabulary size passed a test);
* log-probabilities are finite numbers <= 0: NaN and +/-Infinity are the ``NaN/Inf``
  kind (Python's JSON reader accepts ``NaN`` and ``Infinity``), anything else not a
  number is garbage;
* ``stop_reason: "length"`` with fewer tokens than asked for is a contradiction (an
  engine that stopped at the limit returned the limit's worth of tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pytest_groundtruth.core.failures import FailureKind

Problem = tuple[FailureKind, str]
LOGPROB_SLACK = 1e-6  # rounding above 0 that an engine may print for a certain token


def token_ids_problem(value: object, what: str, vocab: int | None) -> Problem | None:
    """``value`` is a list of integer token ids in ``[0, vocab)``, or the problem."""
    if not isinstance(value, list | tuple):
        return FailureKind.GARBAGE, f"{what} is not a list: {_short(value)}"
    for position, token in enumerate(value):
        if isinstance(token, bool) or not isinstance(token, int):
            return FailureKind.GARBAGE, (f"{what} #{position} is {_short(token, 40)}, not an "
                                         f"integer id ({what} begin {_short(value, 120)})")
        if token < 0 or (vocab is not None and token >= vocab):
            bound = f"[0, {vocab})" if vocab is not None else "[0, ...)"
            return FailureKind.GARBAGE, (f"{what} #{position} is {token}, outside the "
                                         f"vocabulary {bound}")
    return None


def logprobs_problem(values: Sequence[object], what: str) -> Problem | None:
    """``values`` are finite log-probabilities <= 0, or the problem (NaN/Inf its own kind)."""
    for position, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return FailureKind.GARBAGE, (f"{what} #{position} is {_short(value, 40)}, not a "
                                         "number")
        if not math.isfinite(value):
            return FailureKind.NAN, f"{what} #{position} is {value!r}"
        if value > LOGPROB_SLACK:
            return FailureKind.GARBAGE, (f"{what} #{position} is {value!r}, above 0 (not a "
                                         "log-probability)")
    return None


def stop_problem(stop: str, n_tokens: int, max_new_tokens: int) -> Problem | None:
    """A ``length`` stop must have produced ``max_new_tokens`` tokens."""
    if stop == "length" and n_tokens < max_new_tokens:
        return FailureKind.GARBAGE, (f"stop_reason 'length' with {n_tokens} token(s) for a "
                                     f"limit of {max_new_tokens} (a length stop returns the "
                                     "limit's worth)")
    return None


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
