"""What suites and tools run with: :class:`Context` = the inputs, the engines, the results.

* :class:`~.inputs.Inputs`: what a runtime is judged against (prompts, evaluation text,
  oracles, bounds) and how to show tokens in tables;
* :class:`~.engines.Engines`: models, runtimes, artifacts and open runners;
* :class:`~.results.Results`: engine results (generations, perplexities, scores), each
  made once and kept in the result store.

One context lives per pytest process and configuration (each xdist worker has its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context.engines import Engines
from pytest_groundtruth.context.inputs import Inputs
from pytest_groundtruth.context.results import Results
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.core.usage import Lease
from pytest_groundtruth.runtimes.base import Capability
from pytest_groundtruth.store.artifacts import ArtifactCache
from pytest_groundtruth.store.remote import RemoteCache
from pytest_groundtruth.store.results import ResultStore


@dataclass
class Context:
    settings: Settings
    inputs: Inputs
    engines: Engines
    results: Results
    # While open, the cache entries it uses are in use (`groundtruth clean --max-size`).
    lease: Lease | None = None

    @classmethod
    def open(cls, settings: Settings, cache_dir: Path | None = None,
             refresh_token: str | None = None, max_open_runners: int = 2) -> Context:
        root = cache_dir if cache_dir is not None else settings.cache_root()
        remote = RemoteCache(settings.cache_url) if settings.cache_url else None
        engines = Engines(settings, root, ArtifactCache(root, refresh_token, remote),
                          max_open_runners)
        inputs = Inputs(settings, engines.model)
        store = ResultStore(root, refresh_token)
        return cls(settings, inputs, engines, Results(settings, inputs, engines, store),
                   Lease.take(root))

    def prompts_for(self, runtime: str, device: str = "cpu", model: str | None = None
                    ) -> list[str]:
        """The prompt names ``runtime`` can answer: chat prompts only where it renders
        conversations (a suite looping over every prompt asks this, as the matrix skips
        per-prompt chat cases there) and, given ``model``, where that model has a chat
        template."""
        chat = Capability.CHAT in self.engines.runtime(runtime, device).capabilities
        applies = self.inputs.answerable(model) if model is not None else self.inputs.prompts
        names = [n for n, p in self.inputs.prompts.items()
                 if (chat or not p.is_chat) and n in applies]
        if not names:
            raise RuntimeUnavailable(
                f"runtime {runtime!r} renders no conversations and every selected prompt is a "
                f"chat prompt ({', '.join(self.inputs.prompts)}): select a plain prompt "
                "(prompts/*.txt) too, with `prompts = [...]` or --gt-prompt")
        return names

    def close(self) -> None:
        self.engines.close()
        if self.lease is not None:
            self.lease.release()
            self.lease = None
