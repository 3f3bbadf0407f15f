"""Engine results, each made once: generations, perplexities, GGUF roundtrips, measurements.

Every result goes through the :class:`~pytest_groundtruth.store.results.ResultStore` (one
key scheme: kind, artifact key, inputs), so an unchanged re-run runs no engine, and a
result being made by one pytest-xdist worker is waited for by the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context.engines import Engines
from pytest_groundtruth.context.inputs import Inputs
from pytest_groundtruth.core.hashing import text_sha256
from pytest_groundtruth.ggufio.reader import gguf_problem
from pytest_groundtruth.runtimes.base import Artifact, Capability, Generation, PerplexityResult
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
        prompt = self.inputs.prompts[prompt_name].text
        n = self.settings.max_new_tokens

        def make() -> dict[str, Any]:
            runner = self.engines.runner(artifact, device)
            return runner.generate(prompt, n, top_k=top_k).to_json()

        return self.cached("generation", artifact, [prompt, n, top_k], make,
                           Generation.from_json)

    def perplexity(self, slug: str, runtime: str, quant: str
                   ) -> tuple[PerplexityResult, Artifact]:
        """Perplexity of the evaluation text."""
        artifact = self.engines.artifact(slug, runtime, quant)
        _, text = self.inputs.eval_text

        def make() -> dict[str, Any]:
            return self.engines.runner(artifact).perplexity(text).to_json()

        return self.cached("perplexity", artifact, text_sha256(text), make,
                           PerplexityResult.from_json), artifact

    def roundtrip(self, slug: str, runtime_name: str, quant: str) -> Artifact:
        """The artifact exported to GGUF and reimported with the same runtime (each once)."""
        artifact = self.engines.artifact(slug, runtime_name, quant)
        runtime = self.engines.runtime(runtime_name)
        gguf = exported(self.engines.runner(artifact), gguf_problem,
                        self.engines.artifacts)
        return reimported(runtime, self.engines.model(slug), quant, gguf.path,
                          self.engines.artifacts)

