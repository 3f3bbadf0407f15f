"""Runners that give the logits of a whole sequence in one pass (in-process engines).

Perplexity and teacher-forced scoring are then one piece of code for every such engine
(transformers, torchao, llama.cpp): a difference between two runtimes is a difference
in their logits, never in how we post-process them.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pytest_groundtruth.measures import logprobs as lp
from pytest_groundtruth.runtimes.base import PerplexityResult, Runner

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class LogitsRunner(Runner):
    @abc.abstractmethod
    def sequence_logprobs(self, ids: Sequence[int]) -> npt.NDArray[np.float64]:
        """Log-softmax rows ``[len(ids), vocab]``: row i predicts the token after ids[i]."""

    @abc.abstractmethod
    def sequence_call(self, n_tokens: int) -> str:
        """The call that :meth:`sequence_logprobs` makes, for reports."""

    def perplexity(self, text: str) -> PerplexityResult:
        ids = self.tokenize(text)
        start = time.perf_counter()
        logprobs = self.sequence_logprobs(ids)
        ppl, nll = lp.perplexity(logprobs[:-1], ids[1:])
        return PerplexityResult(
            perplexity=ppl,
            cross_entropy=nll,
            tokens_evaluated=len(ids) - 1,
            seconds=time.perf_counter() - start,
            call=self.sequence_call(len(ids)),
        )

    def score(self, token_ids: Sequence[int], start: int) -> npt.NDArray[np.float32]:
        import numpy as np

        if not 1 <= start <= len(token_ids):
            raise ValueError(f"start must be in 1..{len(token_ids)}, got {start}")
        rows = self.sequence_logprobs(token_ids)[start - 1 : len(token_ids) - 1]
        return rows.astype(np.float32)
