"""Speculative decoding statistics, counted the way serving engines report them.

A speculative generation is a sequence of verification steps; at each one the draft
proposes tokens that continue the sequence so far and the target keeps the longest
prefix of them that equals its own greedy choice, plus one token of its own. For greedy
decoding the tokens the target kept are exactly the generated tokens, so what a step
accepted is the longest common prefix of its proposal and the generated tokens at the
same positions: counted from what the draft proposed and what came out, never from the
engine's own say-so.

* acceptance rate = accepted draft tokens / drafted tokens (vLLM's
  ``spec_decode_draft_acceptance_rate``);
* mean acceptance length = 1 + accepted / steps with a draft (vLLM's "mean acceptance
  length": the tokens one target pass yields, its own included).

Drafted tokens beyond the end of the generation (after the end-of-sequence token or
the last allowed token) are not counted: no engine verifies them. A step whose draft
was empty (prompt lookup found no match) is not a drafting step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Proposal:
    """What the draft proposed at one verification step."""

    start: int  # index into the generated tokens of the first proposed token
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Acceptance:
    drafted: int
    accepted: int
    steps: int  # verification steps with a non-empty draft

    @property
    def rate(self) -> float | None:
        """accepted / drafted, or None when nothing was drafted."""
        return self.accepted / self.drafted if self.drafted else None

    @property
    def mean_length(self) -> float | None:
        """1 + accepted / steps, or None when no step had a draft."""
        return 1 + self.accepted / self.steps if self.steps else None

    def __add__(self, other: Acceptance) -> Acceptance:
        return Acceptance(self.drafted + other.drafted, self.accepted + other.accepted,
                          self.steps + other.steps)

    def describe(self) -> str:
        if self.rate is None or self.mean_length is None:
            return "nothing drafted"
        return (f"acceptance rate {self.rate:.3f} ({self.accepted}/{self.drafted} drafted "
                f"tokens), mean acceptance length {self.mean_length:.2f} over {self.steps} "
                "drafting steps")


def accepted_prefix(proposal: Proposal, tokens: Sequence[int]) -> tuple[int, int]:
    """(drafted, accepted) for one step: the proposal's tokens inside the generation, and
    how many of them, from the first, equal the generated tokens."""
    if proposal.start < 0:
        raise ValueError(f"a proposal starts at generated position {proposal.start}")
    drafted = max(0, min(len(proposal.tokens), len(tokens) - proposal.start))
    accepted = 0
    while accepted < drafted and proposal.tokens[accepted] == tokens[proposal.start + accepted]:
        accepted += 1
    return drafted, accepted


def acceptance(proposals: Iterable[Proposal], tokens: Sequence[int]) -> Acceptance:
    """The statistics of a speculative generation that produced ``tokens``."""
    drafted = accepted = steps = 0
    for proposal in proposals:
        d, a = accepted_prefix(proposal, tokens)
        if d:
            drafted, accepted, steps = drafted + d, accepted + a, steps + 1
    return Acceptance(drafted, accepted, steps)


def total(parts: Iterable[Acceptance]) -> Acceptance:
    return sum(parts, Acceptance(0, 0, 0))
