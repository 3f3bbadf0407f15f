"""Engine results, each made once: generations, perplexities, GGUF roundtrips, measurements.

Every result goes through the :class:`~pytest_groundtruth.store.results.ResultStore` (one
key scheme: kind, artifact key, inputs), so an unchanged re-run runs no engine, and a
result being made by one pytest-xdist worker is waited for by the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context.engines import Engines
from pytest_groundtruth.context.inputs import Inputs
from pytest_groundtruth.core.hashing import text_sha256
from pytest_groundtruth.ggufio.reader import gguf_problem
from pytest_groundtruth.measures.logprobs import top_k
from pytest_groundtruth.measures.sequences import first_divergence
from pytest_groundtruth.oracle.format import Oracle
from pytest_groundtruth.runtimes.base import (
    Artifact,
    Capability,
    Generation,
    PerplexityResult,
    respond,
)
from pytest_groundtruth.store.artifacts import exported, reimported
from pytest_groundtruth.store.results import ResultStore

T = TypeVar("T")


class Results:
    def __init__(self, settings: Settings, inputs: Inputs, engines: Engines,
                 store: ResultStore) -> None:
        self.settings = settings
        self.inputs = inputs
        self.engines = engines
        self.store = store

    def cached(self, kind: str, artifact: Artifact, inputs: Any,
               make: Callable[[], dict[str, Any]], decode: Callable[[dict[str, Any]], T]) -> T:
        """A measurement of ``artifact`` (stored as JSON, returned decoded), made once: see
        :meth:`ResultStore.fetch`."""
        return self.store.fetch(kind, artifact.key, inputs, make, decode)

    def generate(self, slug: str, runtime: str, quant: str, prompt: str,
                 device: str = "cpu") -> tuple[Generation, Artifact]:
        artifact = self.engines.artifact(slug, runtime, quant, device)
        return self.generation(artifact, prompt, device), artifact

    def generation(self, artifact: Artifact, prompt_name: str, device: str = "cpu"
                   ) -> Generation:
        """The greedy generation of ``artifact`` on a prompt (with top-k where the runtime
        gives it)."""
        runtime = self.engines.runtime(artifact.runtime, device)
        top_k = self.settings.top_k if Capability.TOPK in runtime.capabilities else 0
        prompt = self.inputs.prompts[prompt_name]
        n = self.settings.max_new_tokens

        def make() -> dict[str, Any]:
            return respond(self.engines.runner(artifact, device), prompt, n, top_k).to_json()

        asked: Any = [[m.role, m.content] for m in prompt.messages] if prompt.is_chat \
            else prompt.text
        gen = self.cached("generation", artifact, [asked, n, top_k], make,
                          Generation.from_json)
        if prompt.is_chat:  # the rendered conversation first, then the generation
            problem = chat_prompt_problem(self.inputs.oracle(artifact.model, prompt_name), gen,
                                          lambda t: self.inputs.decode(artifact.model, t))
            if problem:
                raise ChatPromptMismatch(problem)
        return gen

    def perplexity(self, slug: str, runtime: str, quant: str
                   ) -> tuple[PerplexityResult, Artifact]:
        """Perplexity of the evaluation text."""
        artifact = self.engines.artifact(slug, runtime, quant)
        return self.perplexity_of(artifact), artifact

    def perplexity_of(self, artifact: Artifact) -> PerplexityResult:
        """Perplexity of the evaluation text by any artifact."""
        _, text = self.inputs.eval_text

        def make() -> dict[str, Any]:
            return self.engines.runner(artifact).perplexity(text).to_json()

        return self.cached("perplexity", artifact, text_sha256(text), make,
                           PerplexityResult.from_json)

    def scored_top_k(self, artifact: Artifact, ids: Sequence[int], k: int) -> tuple[int, ...]:
        """The runtime's top-``k`` ids at the last position of ``ids``: its distribution
        there given the tokens before (teacher-forced scoring)."""

        def make() -> dict[str, Any]:
            row = self.engines.runner(artifact).score(list(ids), len(ids) - 1)[0]
            return {"ids": list(top_k(np.asarray(row, dtype=np.float64), k).ids)}

        return self.cached("score-top-k", artifact, [list(ids), k], make,
                           lambda data: tuple(int(i) for i in data["ids"]))

    def roundtrip(self, slug: str, runtime_name: str, quant: str) -> Artifact:
        """The artifact exported to GGUF and reimported with the same runtime (each once)."""
        artifact = self.engines.artifact(slug, runtime_name, quant)
        runtime = self.engines.runtime(runtime_name)
        gguf = exported(artifact, lambda: self.engines.runner(artifact), gguf_problem,
                        self.engines.artifacts)
        return reimported(runtime, self.engines.model(slug), quant, gguf.path,
                          self.engines.artifacts)



class ChatPromptMismatch(AssertionError):
    """A chat prompt reached the engine as other tokens than the oracle's rendering: the
    runtime's chat template (a converted file's ``tokenizer.chat_template``) is missing or
    altered. A parity failure, raised before any generated token is compared."""


def chat_prompt_problem(oracle: Oracle, gen: Generation, decode: Callable[[int], str]
                        ) -> str | None:
    """Why ``gen``'s rendered chat prompt is not the oracle's, or None when it is (or when
    the engine reports neither the ids nor their count)."""
    want, got = oracle.prompt_tokens, gen.prompt_tokens
    notes = "".join(f"; note: {n}" for n in gen.notes)
    if not got:
        if gen.prompt_length is None or gen.prompt_length == len(want):
            return None
        return (f"chat prompt {oracle.prompt_name!r}: the engine rendered the conversation to "
                f"{gen.prompt_length} prompt tokens, the oracle's chat template to {len(want)}: "
                f"its chat template is missing or altered{notes}")
    pos = first_divergence(want, got)
    if pos is None:
        return None

    def show(ids: tuple[int, ...]) -> str:
        return f"{ids[pos]} {decode(ids[pos])!r}" if pos < len(ids) else "(end of prompt)"

    return (f"chat prompt {oracle.prompt_name!r}: the rendered prompt differs from the oracle's "
            f"at prompt token {pos}: oracle {show(want)}, runtime {show(got)} ({len(want)} vs "
            f"{len(got)} prompt tokens): the runtime's chat template is missing or altered "
            f"(a converted file's tokenizer.chat_template){notes}")
