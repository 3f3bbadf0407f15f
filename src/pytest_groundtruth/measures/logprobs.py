"""Logits to log-probabilities, top-k, perplexity: the numeric rules all runners share.

Every in-process runner (transformers, torchao, llama.cpp) hands its raw float32 logits
to these functions, so a difference between two runtimes is a difference in their
logits, never in how we post-process them. Computation is in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pytest_groundtruth.core.failures import EngineFailure, FailureKind

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class TopK:
    """The k most likely next tokens at one step, most likely first."""

    ids: tuple[int, ...]
    logprobs: tuple[float, ...]

    @property
    def margin(self) -> float:
        """top-1 minus top-2 log-probability (inf when only one is stored)."""
        return self.logprobs[0] - self.logprobs[1] if len(self.logprobs) > 1 else math.inf


ROWS_PER_CHUNK = 16  # log_softmax's temporaries: this many rows at a time


def log_softmax(logits: FloatArray) -> npt.NDArray[np.float64]:
    """Row-wise log-softmax in float64; raises :class:`EngineFailure` on NaN/Inf logits.

    Computed ``ROWS_PER_CHUNK`` rows at a time into the result: each row's arithmetic is
    the same as on the whole array (bit-identical), but a teacher-forced pass over a few
    hundred positions of a 49k vocabulary needs its float64 temporaries for 16 rows, not
    three more copies of the whole matrix (hundreds of MiB of peak memory)."""
    x = np.asarray(logits)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise EngineFailure(FailureKind.NAN, f"{bad} non-finite logit(s) (NaN or Inf)")
    result: npt.NDArray[np.float64] = np.empty(x.shape, dtype=np.float64)
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    out = result.reshape(rows.shape)
    for start in range(0, rows.shape[0], ROWS_PER_CHUNK):
        chunk = rows[start:start + ROWS_PER_CHUNK].astype(np.float64)
        shifted = chunk - chunk.max(axis=-1, keepdims=True)
        out[start:start + ROWS_PER_CHUNK] = shifted - np.log(
            np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


def argmax(row: FloatArray) -> int:
    """Greedy choice; ties go to the lowest token id (as torch.argmax and llama.cpp do)."""
    return int(np.argmax(row))


def top_k(logprobs_row: FloatArray, k: int) -> TopK:
    """The ``k`` most likely ids, by log-probability descending, ties by id ascending."""
    k = min(k, logprobs_row.shape[-1])
    candidates = np.argpartition(-logprobs_row, k - 1)[:k]
    order = sorted(candidates.tolist(), key=lambda i: (-float(logprobs_row[i]), i))
    return TopK(tuple(order), tuple(float(logprobs_row[i]) for i in order))


def perplexity(logprobs: FloatArray, targets: Sequence[int]) -> tuple[float, float]:
    """(perplexity, mean NLL) of ``targets`` where ``logprobs[i]`` predicts ``targets[i]``."""
    if len(targets) == 0:
        raise ValueError("perplexity needs at least one predicted token")
    picked = np.asarray(logprobs, dtype=np.float64)[np.arange(len(targets)), list(targets)]
    nll = float(-picked.mean())
    return math.exp(nll), nll
