"""The per-process context the suites run in: models, artifacts, runners, oracles, caches.

One :class:`Workbench` lives per pytest process (each xdist worker has its own). It
resolves each model once, remembers why a model or runtime is unavailable (so every
test of it skips with the same reason without retrying), keeps a few runners open
(least recently used closed first) so a model is loaded once per worker, and serves
generations and perplexities from the content-addressed cache, running an engine only
on a miss.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.config.prompts import Prompt, load_prompts
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.models.sources import ModelUnavailable, ResolvedModel, resolve
from pytest_groundtruth.oracle.format import (
    Oracle,
    load_oracle,
    load_perplexity,
    oracle_path,
    perplexity_path,
)
from pytest_groundtruth.runtimes.base import Artifact, Generation, PerplexityResult, Runner, Runtime
from pytest_groundtruth.runtimes.registry import get_runtime
from pytest_groundtruth.store.cache import ArtifactCache, GenerationCache

if TYPE_CHECKING:
    from pytest_groundtruth.config.settings import Bound, Settings
    from pytest_groundtruth.suites.cases import Case
    from pytest_groundtruth.suites.result import TokenRow


class Workbench:
    def __init__(
        self,
        settings: Settings,
        cache_dir: Path,
        refresh_token: str | None = None,
        max_open_runners: int = 2,
    ) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self.artifacts = ArtifactCache(cache_dir, refresh_token)
        self.generations = GenerationCache(cache_dir, refresh_token)
        self.max_open_runners = max_open_runners
        self._models: dict[str, ResolvedModel | ModelUnavailable] = {}
        self._runtimes: dict[str, Runtime] = {}
        self._artifacts: dict[tuple[str, str, str], Artifact] = {}
        self._runners: OrderedDict[str, Runner] = OrderedDict()
        self._oracles: dict[tuple[str, str, str, str], Oracle] = {}
        self._decoders: dict[str, Any] = {}
        self.engine_runs = 0  # generations/perplexities actually computed (cache misses)

    # ------------------------------------------------------------------ inputs

    @cached_property
    def prompts(self) -> dict[str, Prompt]:
        names = list(self.settings.prompts) if self.settings.prompts else None
        return {p.name: p for p in load_prompts(self.settings.path(self.settings.prompts_dir),
                                                names)}

    @cached_property
    def eval_text(self) -> tuple[Path, str]:
        path = self.settings.path(self.settings.eval_text)
        return path, path.read_text(encoding="utf-8")

    def model(self, slug: str) -> ResolvedModel:
        """The resolved model; raises :class:`ModelUnavailable` (cached) when it cannot be."""
        if slug not in self._models:
            try:
                self._models[slug] = resolve(
                    self.settings.spec(slug), self.cache_dir, self.settings.root
                )
            except ModelUnavailable as exc:
                self._models[slug] = exc
        found = self._models[slug]
        if isinstance(found, ModelUnavailable):
            raise found
        return found

    def runtime(self, name: str, device: str = "cpu") -> Runtime:
        key = f"{name}@{device}"
        if key not in self._runtimes:
            self._runtimes[key] = get_runtime(name, self.settings, device=device)
        runtime = self._runtimes[key]
        reason = runtime.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        return runtime

    def oracle(self, slug: str, prompt: str, precision: str = "float32",
               device: str = "cpu") -> Oracle:
        key = (slug, prompt, precision, device)
        if key not in self._oracles:
            root = self.settings.path(self.settings.oracle_dir)
            self._oracles[key] = load_oracle(oracle_path(root, slug, prompt, precision, device))
        return self._oracles[key]

    def oracle_perplexity(self, slug: str) -> dict[str, Any]:
        root = self.settings.path(self.settings.oracle_dir)
        return load_perplexity(perplexity_path(root, slug))

    def bound(self, case: Case, param: str) -> Bound:
        """The bound on ``param`` of the case's suite, for exactly this case."""
        return self.settings.bound(case.suite, param, model=case.model, runtime=case.runtime,
                                   quantization=case.quant, prompt=case.prompt)

    def token_table(self, case: Case, reference: Sequence[int], tokens: Sequence[int],
                    positions: Sequence[int], oracle: Oracle | None = None
                    ) -> tuple[TokenRow, ...]:
        """Failure-table rows comparing ``tokens`` with ``reference`` (the oracle's or not)."""
        from pytest_groundtruth.suites.result import token_rows

        return token_rows(reference, tokens, lambda t: self.decode(case.model, t), positions,
                          oracle)

    def decode(self, slug: str, token: int) -> str:
        """One token's text, special tokens shown (for tables)."""
        if slug not in self._decoders:
            from tokenizers import Tokenizer

            path = self.model(slug).path / "tokenizer.json"
            self._decoders[slug] = Tokenizer.from_file(str(path))
        text: str = self._decoders[slug].decode([token], skip_special_tokens=False)
        return text

    # ------------------------------------------------------------------ artifacts/runners

    def artifact(self, slug: str, runtime_name: str, quant: str, device: str = "cpu") -> Artifact:
        """The artifact under test: the user's file when configured, else built and cached."""
        key = (slug, runtime_name, quant + "@" + device)
        if key not in self._artifacts:
            runtime = self.runtime(runtime_name, device)
            for ext in self.settings.artifacts:
                if (ext.model, ext.runtime, ext.quantization) == (slug, runtime_name, quant):
                    path = self.settings.path(ext.path)
                    self._artifacts[key] = external_artifact(runtime, slug, quant, path)
                    break
            else:
                self._artifacts[key] = runtime.prepare(self.model(slug), quant, self.artifacts)
        return self._artifacts[key]

    def runner(self, artifact: Artifact, device: str = "cpu") -> Runner:
        key = f"{artifact.key}@{device}"
        if key in self._runners:
            self._runners.move_to_end(key)
            return self._runners[key]
        while len(self._runners) >= self.max_open_runners:
            _, old = self._runners.popitem(last=False)
            old.close()
        runner = self.runtime(artifact.runtime, device).open(artifact, self.model(artifact.model))
        self._runners[key] = runner
        return runner

    def close(self) -> None:
        while self._runners:
            _, runner = self._runners.popitem()
            runner.close()

    # ------------------------------------------------------------------ results (cached)

    def generate(self, slug: str, runtime_name: str, quant: str, prompt_name: str,
                 device: str = "cpu") -> tuple[Generation, Artifact]:
        artifact = self.artifact(slug, runtime_name, quant, device)
        return self.generate_artifact(artifact, prompt_name, device), artifact

    def generate_artifact(self, artifact: Artifact, prompt_name: str,
                          device: str = "cpu") -> Generation:
        from pytest_groundtruth.runtimes.base import Capability

        runtime = self.runtime(artifact.runtime, device)
        top_k = self.settings.top_k if Capability.TOPK in runtime.capabilities else 0
        prompt = self.prompts[prompt_name].text
        n = self.settings.max_new_tokens
        gen = self.generations.get(artifact.key, prompt, n, top_k)
        if gen is None:
            gen = self.runner(artifact, device).generate(prompt, n, top_k=top_k)
            self.engine_runs += 1
            self.generations.put(artifact.key, prompt, n, top_k, gen)
        return gen

    def roundtrip(self, slug: str, runtime_name: str, quant: str) -> Artifact:
        """Export the artifact to GGUF (once, cached) and reimport it with the same runtime."""
        import json

        from pytest_groundtruth.core.atomic import atomic_path, atomic_write_text, locked

        key = (slug, runtime_name, quant + "@roundtrip")
        if key in self._artifacts:
            return self._artifacts[key]
        artifact = self.artifact(slug, runtime_name, quant)
        export = self.cache_dir / "exports" / f"{artifact.key[:32]}.gguf"
        sidecar = export.with_suffix(".json")
        token = self.artifacts.refresh_token
        with locked(export):
            try:
                fresh = json.loads(sidecar.read_text())["token"] == token and export.is_file()
            except (OSError, ValueError, KeyError, TypeError):
                fresh = False
            if not fresh:
                with atomic_path(export) as tmp:
                    call = self.runner(artifact).export_gguf(tmp)
                atomic_write_text(sidecar, json.dumps({"call": call, "token": token}) + "\n")
        runtime = self.runtime(runtime_name)
        self._artifacts[key] = self.artifacts.reimported(runtime, self.model(slug), quant, export)
        return self._artifacts[key]

    def perplexity(self, slug: str, runtime_name: str, quant: str) -> tuple[PerplexityResult,
                                                                            Artifact]:
        artifact = self.artifact(slug, runtime_name, quant)
        _, text = self.eval_text
        key = "ppl:" + hashlib.sha256(text.encode()).hexdigest()
        cached = self.generations.get_json(artifact.key, key)
        if cached is not None:
            return PerplexityResult(**cached), artifact
        result = self.runner(artifact).perplexity(text)
        self.engine_runs += 1
        self.generations.put_json(artifact.key, key, asdict(result))
        return result, artifact


def external_artifact(runtime: Runtime, slug: str, quant: str, path: Path) -> Artifact:
    """A user-supplied artifact: used as is (never rebuilt), keyed by its content."""
    from pytest_groundtruth.store.cache import tree_sha256

    if not path.exists():
        raise FileNotFoundError(
            f"artifact for {slug}/{runtime.name}/{quant} not found: {path} "
            "(check [[tool.groundtruth.artifacts]] or --gt-artifact)"
        )
    problem = runtime.validate(path)
    if problem:
        raise ValueError(f"artifact {path} is not a sound {runtime.name} artifact: {problem}")
    digest = tree_sha256(path)
    return Artifact(runtime.name, slug, quant, path, key=f"external-{digest}",
                    recipe=f"supplied by the user: {path}", external=True)
