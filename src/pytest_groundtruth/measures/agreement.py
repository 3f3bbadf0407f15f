"""Distribution-level agreement with the oracle under teacher forcing.

The oracle stores, per generated position, its top-k token ids and log-probabilities.
The runtime scores the oracle's own sequence (prompt + oracle tokens) and gives its
log-probabilities for every vocabulary entry. At each position:

* top-1 agreement: the runtime's argmax is the oracle's token (llama.cpp's "same top");
* KL(oracle || runtime) over k + 1 outcomes: the oracle's top-k ids and one remainder
  bucket holding the rest of the probability mass. By the data-processing inequality
  this is a lower bound on the full-vocabulary KL divergence, exact when the oracle's
  mass beyond its top-k is negligible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pytest_groundtruth.measures.logprobs import TopK

_FLOOR = 1e-12  # probability floor for the remainder bucket (mass rounding)


@dataclass(frozen=True)
class PositionAgreement:
    top1: bool
    kl: float
    runtime_argmax: int


def bucket_kl(step: TopK, row: npt.NDArray[np.floating]) -> float:
    """KL(oracle || runtime) over the oracle's top-k ids plus a remainder bucket."""
    p = np.exp(np.asarray(step.logprobs, dtype=np.float64))
    q = np.exp(np.asarray(row, dtype=np.float64)[list(step.ids)])
    p_rest = max(1.0 - float(p.sum()), 0.0)
    q_rest = max(1.0 - float(q.sum()), _FLOOR)
    q = np.maximum(q, _FLOOR)
    kl = float(np.sum(p * (np.log(p) - np.log(q))))
    if p_rest > _FLOOR:
        kl += p_rest * (math.log(p_rest) - math.log(q_rest))
    return max(kl, 0.0)


def agreement(steps: Sequence[TopK], tokens: Sequence[int],
              rows: npt.NDArray[np.floating]) -> list[PositionAgreement]:
    """Per-position agreement of ``rows`` (runtime log-probs, one row per oracle token)."""
    if len(rows) != len(tokens) or len(steps) != len(tokens):
        raise ValueError(f"{len(rows)} scored rows for {len(tokens)} oracle tokens")
    out = []
    for step, token, row in zip(steps, tokens, rows, strict=True):
        best = int(np.argmax(row))
        out.append(PositionAgreement(best == token, bucket_kl(step, row), best))
    return out
