"""Near ties by rule: the one flip of a greedy sequence that a correct engine may make.

Two greedy sequences agree up to their first divergence; after it they are conditioned on
different prefixes and say nothing more about the engine. The flip at the first
divergence is a **near tie** when (vLLM's ``check_logprobs_close``, with the reference's
log-probabilities in place of a fixed top-k):

1. the reference rates the runtime's token within :data:`MARGIN` nats of its own choice:
   ``logp_ref(reference token) - logp_ref(runtime token) < MARGIN`` (so the runtime's token
   is in the reference's stored top-k, and the reference was nearly undecided there);
2. where the runtime's own top-k at that position is known, the reference's token is in
   it (vLLM's other half: the runtime, too, found the reference's choice plausible).

A sequence that ended (or ran on) where the other did not is a length difference, never a
near tie. After a near tie the sequences are not compared further: the count-based suites
count the mismatches before it (none, since it is the first divergence). Every decision
is reported in the result's notes with the count it would otherwise have had.

The margin, measured (``groundtruth near-ties``, docs/near-ties.md): a correct conversion
moves the reference's top-1 minus top-2 log-probability difference at each position by
a *shift*; a correct engine flips a position exactly where the shift exceeds the
reference's margin there. Teacher-forced on the embedded model's oracle prompts and its
evaluation text (390 positions per conversion): at float32 (llama.cpp) no shift; at
bfloat16 (transformers) 99 % of shifts below 0.24 nats; at int8 (llama.cpp Q8_0, torchao)
99 % below 0.43 and 0.46. The 23 flips these correct bfloat16 and int8 conversions made
all sat at reference margins of at most 0.234 nats. :data:`MARGIN` = 0.3 covers every one
of them, and stays below the shift that 1 % of int8 positions reach, so it is not the
loosest margin the data allow: a flip where the reference preferred its own token by
more than 0.3 nats (35 % more likely) still counts. An int4 conversion flips positions
with margins up to 2.7 nats (77 of its 120 flips at 0.3 or more): those are not near
ties, and count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.measures.sequences import (
    count_mismatches,
    first_divergence,
    mismatch_positions,
)

#: How the count-based suites treat near ties: ``rule`` (the default) decides them by this
#: module's rule; ``count`` counts every position (the original workflow); ``exempt`` is
#: the earlier name of ``rule``.
MODES = ("rule", "count", "exempt")

#: Below this gap (nats) between the reference's token and the runtime's, a first flip is
#: a near tie (module docstring: the measurement behind it).
MARGIN = 0.3


@dataclass(frozen=True)
class NearTie:
    """A first divergence decided to be a near tie."""

    position: int
    reference_token: int
    runtime_token: int
    gap: float  # logp_ref(reference token) - logp_ref(runtime token), < margin
    margin: float

    def describe(self, reference: str = "the oracle") -> str:
        return (f"near tie at position {self.position}: {reference} rated the runtime's token "
                f"{self.runtime_token} {self.gap:.3f} nats below its own {self.reference_token} "
                f"(< margin {self.margin}); positions after it not compared")


def near_tie(reference: Sequence[int], tokens: Sequence[int], steps: Sequence[TopK],
             runtime_steps: Sequence[TopK] | None = None, margin: float = MARGIN
             ) -> NearTie | None:
    """The near tie at the first divergence of ``tokens`` from ``reference``, or None when
    they do not diverge or the flip there is no near tie. ``steps``: the reference's top-k
    per position (most likely first); ``runtime_steps``: the runtime's, where known."""
    pos = first_divergence(reference, tokens)
    if pos is None or pos >= len(reference) or pos >= len(tokens) or pos >= len(steps):
        return None
    step = steps[pos]
    ours, theirs = reference[pos], tokens[pos]
    if theirs not in step.ids or ours not in step.ids:
        return None
    gap = step.logprobs[step.ids.index(ours)] - step.logprobs[step.ids.index(theirs)]
    if not gap < margin:
        return None
    if runtime_steps is not None and pos < len(runtime_steps) \
            and ours not in runtime_steps[pos].ids:
        return None
    return NearTie(pos, ours, theirs, gap, margin)


@dataclass(frozen=True)
class TokenComparison:
    """Greedy tokens against a reference's, with the first flip decided by the rule."""

    mismatches: int  # count_mismatches, the original measure
    counted: int  # what a bound is checked against: 0 after a near tie
    first: int | None  # first divergence
    positions: tuple[int, ...]  # every differing position
    tie: NearTie | None = None  # the first divergence, when it is a near tie
    note: str = ""  # the decision, for the result's notes (empty: nothing to say)


def compare(reference: Sequence[int], tokens: Sequence[int], mode: str = "count",
            steps: Sequence[TopK] | None = (), runtime_steps: Sequence[TopK] | None = None,
            name: str = "the oracle") -> TokenComparison:
    """``tokens`` against ``reference``. With ``mode`` ``rule`` (or ``exempt``) a first
    divergence that is a :func:`near_tie` is not counted, nor anything after it; ``steps``
    is the reference's top-k per position (None: the reference has none, so near ties
    cannot be decided and every position counts, said in the note)."""
    mismatches = count_mismatches(reference, tokens)
    first = first_divergence(reference, tokens)
    positions = tuple(mismatch_positions(reference, tokens))
    if first is None or mode == "count":
        return TokenComparison(mismatches, mismatches, first, positions)
    if steps is None:
        return TokenComparison(mismatches, mismatches, first, positions, note=(
            f"{name} has no top-k log-probabilities, so the near-tie rule cannot decide the "
            f"flip at position {first}: every position counted"))
    tie = near_tie(reference, tokens, steps, runtime_steps)
    if tie is None:
        return TokenComparison(mismatches, mismatches, first, positions)
    return TokenComparison(mismatches, 0, first, positions, tie, note=(
        f"{tie.describe(name)} ({mismatches} positional mismatches counting every position)"))
