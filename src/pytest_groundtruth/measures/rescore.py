"""Rescoring: how the float32 reference rates a runtime's own greedy continuation.

The runtime's tokens are teacher-forced through the reference (prompt + runtime tokens,
one forward pass), and each position is judged by what the reference thinks of the
runtime's choice *given the runtime's own prefix*: its rank under the reference and its
log-probability gap to the reference's best token there. A legitimate flip at a near
tie costs a small gap once; the positions after it are judged on their own prefix, so
one early flip no longer makes the rest of the sequence count as wrong (the weakness of
positional mismatch counts on small models).

Three pure verdicts over those ratings:

* the largest gap (the one position the reference likes least), against a bound
  calibrated per quantization on correct conversions;
* the excess reference NLL: the mean negative log-likelihood, under the reference, of
  the runtime's continuation minus that of the oracle's own greedy continuation (nats
  per token), a sequence-level measure of how far the runtime drifted;
* the stop rule: a continuation that holds one of the model's end-of-sequence ids
  before its end did not stop where the model does, and one that says it stopped at an
  EOS whose last token is not one did stop where the model does not.

Nothing here needs the runtime's log-probabilities: it works for engines that only
return tokens (the apr CLI, servers, command-line runtimes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Rating:
    """The reference's view of the runtime's token at one generated position."""

    position: int
    token: int  # the runtime's choice
    logprob: float  # the reference's log-probability of it
    best: int  # the reference's own choice (argmax, ties to the lowest id)
    best_logprob: float
    rank: int  # 1-based rank of ``token`` under the reference (1 = its choice)

    @property
    def gap(self) -> float:
        """How much less likely the reference finds the runtime's token than its own (>= 0)."""
        return max(self.best_logprob - self.logprob, 0.0)

    def to_json(self) -> list[float | int]:
        return [self.token, self.logprob, self.best, self.best_logprob, self.rank]

    @classmethod
    def from_json(cls, position: int, data: Sequence[float | int]) -> Rating:
        token, logprob, best, best_logprob, rank = data
        return cls(position, int(token), float(logprob), int(best), float(best_logprob),
                   int(rank))


def rate(tokens: Sequence[int], rows: npt.NDArray[np.floating]) -> tuple[Rating, ...]:
    """Ratings of ``tokens`` from reference log-probability rows (``rows[i]`` predicts
    ``tokens[i]`` given the prompt and ``tokens[:i]``)."""
    if len(rows) != len(tokens):
        raise ValueError(f"{len(rows)} reference rows for {len(tokens)} runtime tokens")
    out = []
    for i, (token, row) in enumerate(zip(tokens, rows, strict=True)):
        values = np.asarray(row, dtype=np.float64)
        if not 0 <= token < len(values):
            raise ValueError(f"position {i}: token id {token} outside the reference's "
                             f"vocabulary of {len(values)}")
        best = int(np.argmax(values))
        mine = float(values[token])
        rank = 1 + int(np.count_nonzero(values > mine)) + int(
            np.count_nonzero(values[:token] == mine))  # ties rank by id, as argmax does
        out.append(Rating(i, int(token), mine, best, float(values[best]), rank))
    return tuple(out)


def judged_span(tokens: Sequence[int], eos_ids: Sequence[int]) -> int:
    """How many of ``tokens`` the reference can judge: up to and including the first EOS
    (after it the model has stopped; what follows is the runtime's, not the model's)."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return i + 1
    return len(tokens)


def stop_problem(tokens: Sequence[int], stop_reason: str, eos_ids: Sequence[int]) -> str | None:
    """Why the runtime's stop disagrees with the model's stop rule, or None."""
    span = judged_span(tokens, eos_ids)
    if span < len(tokens):
        return (f"generated end-of-sequence token {tokens[span - 1]} at position {span - 1} "
                f"and did not stop ({len(tokens) - span} more token(s))")
    if stop_reason == "eos" and (not tokens or tokens[-1] not in eos_ids):
        last = tokens[-1] if tokens else None
        return (f"stopped as if at end of sequence after token {last}, which is not one of "
                f"the model's end-of-sequence ids {list(eos_ids)}")
    return None


def mean_nll(logprobs: Sequence[float]) -> float:
    """Mean negative log-likelihood (nats per token); 0 for no tokens."""
    return -float(np.mean(logprobs)) if len(logprobs) else 0.0


@dataclass(frozen=True)
class RescoreVerdict:
    passed: bool
    worst: Rating | None  # the position with the largest gap (None: no tokens)
    over: tuple[Rating, ...]  # positions whose gap exceeds ``max_gap``
    nll: float  # mean reference NLL of the runtime's (judged) continuation
    oracle_nll: float  # mean reference NLL of the oracle's own continuation
    stop: str | None  # stop-rule problem

    @property
    def max_gap(self) -> float:
        return self.worst.gap if self.worst is not None else 0.0

    @property
    def excess_nll(self) -> float:
        return self.nll - self.oracle_nll


def judge(ratings: Sequence[Rating], oracle_logprobs: Sequence[float], max_gap: float,
          max_excess_nll: float, stop: str | None = None) -> RescoreVerdict:
    """The verdict on ``ratings`` (the judged span of the runtime's continuation).

    ``oracle_logprobs``: the reference's log-probability of each of the oracle's own
    greedy tokens (its top-1 at each step). Passes when no position's gap exceeds
    ``max_gap``, the excess NLL is at most ``max_excess_nll``, and the stop agrees."""
    worst = max(ratings, key=lambda r: (r.gap, -r.position)) if ratings else None
    over = tuple(r for r in ratings if r.gap > max_gap)
    nll = mean_nll([r.logprob for r in ratings])
    oracle_nll = mean_nll(list(oracle_logprobs))
    passed = not over and nll - oracle_nll <= max_excess_nll and stop is None
    return RescoreVerdict(passed, worst, over, nll, oracle_nll, stop)
