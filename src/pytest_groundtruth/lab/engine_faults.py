"""Engine faults: a real llama.cpp whose run-time behaviour is broken, file untouched.

:mod:`~pytest_groundtruth.lab.file_faults` breaks conversions; these break the engine
that runs a correct file, the way a serving layer or a kernel bug would. Only the
behaviour can show them (the file is correct, so the integrity suite must pass), which
makes them the measure of the black-box suites' power. Each is a
:class:`FaultyLlamaCppRuntime` running llama.cpp through llama-cpp-python with one
fault (``groundtruth falsify`` puts it in place of the ``llamacpp`` runtime):

* prompt_token_dropped: the prompt is evaluated without its last token (an off-by-one in
  the prompt loop);
* prompt_token_repeated: the prompt's last token is evaluated twice (the classic
  "re-feed the last token before sampling" bug);
* positions_shifted: the position counter is not advanced past the prompt, so the first
  generated token is written at the last prompt token's position (overwriting it in the
  KV cache) and every generated token sits one position early;
* kv_cache_reused: the KV cache is not cleared between prompts, so each prompt is
  appended to the previous generation (a serving bug across requests);
* rope_base_wrong: the RoPE frequency base of another model family whatever the file
  says: llama.cpp's default 10000 (Llama-2's), or Llama-3's 500000 where the file says
  10000 (``rope_freq_base`` given at load time);
* second_best_sometimes: every 8th generated token (steps 4, 12, 20, 28) is the
  engine's second choice instead of its first (a sampler bug).

The wrappers report the prompt's ids as their tokenizer made them, as a server does: the
fault is in what the engine then evaluates, so prompt-token parity cannot see the first
two; the continuation must. The first five change only generation; ``rope_base_wrong``
also changes scoring and perplexity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.ggufio.reader import scan_gguf
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner, LlamaCppRuntime

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_groundtruth.models.sources import ResolvedModel

WRONG_ROPE_BASES = (10000.0, 500000.0)  # Llama-2's (llama.cpp's default), Llama-3's
SECOND_BEST_EVERY = 8
SECOND_BEST_FIRST = 4


@dataclass(frozen=True)
class EngineFault:
    name: str
    summary: str


ENGINE_FAULTS: dict[str, EngineFault] = {
    f.name: f
    for f in (
        EngineFault("prompt_token_dropped", "the prompt is evaluated without its last token"),
        EngineFault("prompt_token_repeated", "the prompt's last token is evaluated twice"),
        EngineFault("positions_shifted",
                    "generated tokens one position early, over the last prompt token"),
        EngineFault("kv_cache_reused", "the KV cache is kept across prompts"),
        EngineFault("rope_base_wrong",
                    "another family's RoPE base at run time, whatever the file says"),
        EngineFault("second_best_sometimes",
                    f"every {SECOND_BEST_EVERY}th generated token (from step "
                    f"{SECOND_BEST_FIRST}) is the engine's second choice"),
    )
}


def wrong_rope_base(artifact: Artifact) -> float:
    """Llama-2's (llama.cpp's default) RoPE base, or Llama-3's where the file has that."""
    scalars = scan_gguf(artifact.path).scalars
    base = scalars.get(f"{scalars.get('general.architecture')}.rope.freq_base")
    return next(b for b in WRONG_ROPE_BASES if b != base)


class FaultyLlamaCppRunner(LlamaCppRunner):
    """llama.cpp with one run-time fault (see the module docstring)."""

    def __init__(self, artifact: Artifact, fault: str, **kwargs: Any) -> None:
        if fault not in ENGINE_FAULTS:
            raise ValueError(f"unknown engine fault {fault!r} (known: {', '.join(ENGINE_FAULTS)})")
        self.fault = fault
        overrides = {"rope_freq_base": wrong_rope_base(artifact)} if fault == "rope_base_wrong" \
            else None
        super().__init__(artifact, overrides=overrides, **kwargs)
        self.load_call = f"[engine fault {fault}] {self.load_call}"

    def _start(self, ids: Sequence[int], call: str) -> None:
        if self.fault == "kv_cache_reused":
            if self.llm.n_tokens + len(ids) + 64 > self.n_ctx:  # keep it running: wrap around
                self.llm.reset()
            self._eval(ids, call)
            return
        if self.fault == "prompt_token_dropped" and len(ids) > 1:
            ids = ids[:-1]
        elif self.fault == "prompt_token_repeated":
            ids = [*ids, ids[-1]]
        super()._start(ids, call)
        if self.fault == "positions_shifted" and len(ids) > 1:
            # The position counter is not advanced past the prompt: the first generated
            # token is written at the last prompt token's position, overwriting its KV
            # cell, and every later token sits one position early. The first token is
            # still chosen from the prompt's last logits (moved to the row the loop reads).
            n = self.llm.n_tokens
            self.llm.scores[n - 2] = self.llm.scores[n - 1]
            self.llm.n_tokens = n - 1

    def _choose(self, step: int, row: npt.NDArray[np.float64]) -> int:
        import numpy as np

        if (self.fault == "second_best_sometimes" and step >= SECOND_BEST_FIRST
                and (step - SECOND_BEST_FIRST) % SECOND_BEST_EVERY == 0):
            order = np.argsort(-row, kind="stable")
            return int(order[1])
        return super()._choose(step, row)


class FaultyLlamaCppRuntime(LlamaCppRuntime):
    """The llama.cpp runtime whose runners carry one engine fault.

    It keeps llama.cpp's name, quantizations and artifacts (the correct files); the fault
    is part of :meth:`key_parts`, so its results never mix with the correct engine's.
    Put it under a context with :meth:`Engines.use_runtime`."""

    def __init__(self, fault: str, **kwargs: Any) -> None:
        if fault not in ENGINE_FAULTS:
            raise ValueError(f"unknown engine fault {fault!r} (known: {', '.join(ENGINE_FAULTS)})")
        super().__init__(**kwargs)
        self.fault = fault

    def key_parts(self, quant: str) -> dict[str, str]:
        return {**super().key_parts(quant), "engine_fault": self.fault}

    def version(self) -> str:
        return f"{super().version()} / engine fault {self.fault}"

    def open(self, artifact: Artifact, model: ResolvedModel) -> FaultyLlamaCppRunner:
        reason = self.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        return FaultyLlamaCppRunner(artifact, self.fault, n_threads=self.n_threads,
                                    n_ctx=self.n_ctx, seed=self.seed,
                                    kv_cache=self.kv_cache_type(artifact.quant))
