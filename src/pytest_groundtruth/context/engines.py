"""What runs: resolved models, configured runtimes, artifacts and open runners.

Each model is resolved once per process; why a model or a runtime is unavailable is
remembered, so every test of it skips with the same reason without retrying. The
artifact under test is the user's file when one is configured for the cell, else the
runtime's conversion from the artifact cache. A few runners stay open (the pool), so a
model is loaded once per process. The counts (runners opened, the largest model
loaded) are what ``groundtruth bench`` reports per process.
"""

from __future__ import annotations

import time
from pathlib import Path

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.core.budget import rss_bytes, weights_bytes
from pytest_groundtruth.core.failures import InputError, RuntimeUnavailable
from pytest_groundtruth.core.hashing import digest, tree_sha256
from pytest_groundtruth.core.memory import trim_heap
from pytest_groundtruth.models.sources import ModelUnavailable, ResolvedModel, resolve
from pytest_groundtruth.runtimes.base import Artifact, Runner, Runtime
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.runtimes.threads import xdist_workers
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare
from pytest_groundtruth.store.pool import RunnerPool


class Engines:
    def __init__(self, settings: Settings, cache_dir: Path, artifacts: ArtifactCache,
                 max_open_runners: int = 2) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self.artifacts = artifacts
        self.pool = RunnerPool(max_open_runners)
        self._models: dict[str, ResolvedModel | ModelUnavailable] = {}
        self._runtimes: dict[str, Runtime] = {}
        self._built: dict[tuple[str, str, str, str], Artifact] = {}
        self.runners_opened = 0
        self.resolve_seconds = 0.0  # spent resolving models (a cost each process pays once)
        # On disk: the largest weights a runner of this process loaded, the artifact's or
        # its float32 source's (which the integrity, reimport and oracle paths read whole).
        self.largest_model_bytes = 0

    def model(self, slug: str) -> ResolvedModel:
        """The resolved model; raises :class:`ModelUnavailable` (remembered) when it cannot be."""
        if slug not in self._models:
            start = time.perf_counter()
            try:
                self._models[slug] = resolve(self.settings.spec(slug), self.cache_dir,
                                             self.settings.root, self.settings.roster)
            except ModelUnavailable as exc:
                self._models[slug] = exc
            trim_heap()  # a source built now (float32 weights written) leaves freed heap
            self.resolve_seconds += time.perf_counter() - start
        found = self._models[slug]
        if isinstance(found, ModelUnavailable):
            raise found
        return found

    def runtime(self, name: str, device: str = "cpu") -> Runtime:
        """The configured runtime; raises :class:`RuntimeUnavailable` when it cannot run here."""
        key = f"{name}@{device}"
        if key not in self._runtimes:
            self._runtimes[key] = make_runtime(name, self.settings, device)
        runtime = self._runtimes[key]
        reason = runtime.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        return runtime

    def use_runtime(self, runtime: Runtime, device: str = "cpu") -> None:
        """Run ``runtime`` (an object, not a configured name) for its ``name`` from now on:
        how a harness puts an instrumented engine under the configured matrix."""
        self._runtimes[f"{runtime.name}@{device}"] = runtime

    def artifact(self, slug: str, runtime_name: str, quant: str, device: str = "cpu"
                 ) -> Artifact:
        """The artifact under test: the user's file when configured, else built and cached."""
        key = (slug, runtime_name, quant, device)
        if key not in self._built:
            runtime = self.runtime(runtime_name, device)
            supplied = self.settings.supplied_artifact(slug, runtime_name, quant)
            if supplied is not None:
                self._built[key] = external_artifact(runtime, slug, quant, supplied)
            else:
                self._built[key] = prepare(runtime, self.model(slug), quant, self.artifacts)
        return self._built[key]

    def runner(self, artifact: Artifact, device: str = "cpu", alone: bool = False) -> Runner:
        """An open runner on ``artifact`` (from the pool). ``alone``: when the artifact's
        weights do not fit the process's memory budget beside what the process holds now,
        close the other open runners first (the float32 reference under a budget: the
        artifact under test's engine, which maps its whole file, is opened again after).
        Only for callers that hold no other runner while they use this one."""
        key = f"{artifact.key}@{device}"
        if alone and key not in self.pool and len(self.pool) and not self.fits(artifact):
            self.pool.close()

        def open_runner() -> Runner:
            self.artifacts.verify(artifact.path)  # its content, before an engine reads it
            runner = self.runtime(artifact.runtime, device).open(artifact,
                                                                 self.model(artifact.model))
            self.runners_opened += 1
            source = self._models.get(artifact.model)
            source_bytes = weights_bytes(source.path) if isinstance(source, ResolvedModel) else 0
            self.largest_model_bytes = max(self.largest_model_bytes,
                                           weights_bytes(artifact.path), source_bytes)
            return runner

        return self.pool.get(key, open_runner)

    def fits(self, artifact: Artifact) -> bool:
        """Whether ``artifact``'s weights fit this process's memory budget beside what it
        holds now (its resident memory)."""
        budget = self.settings.memory_budget(xdist_workers())
        return weights_bytes(artifact.path) + rss_bytes() <= budget

    def close(self) -> None:
        self.pool.close()
        for runtime in self._runtimes.values():
            runtime.close()


class ArtifactError(InputError):
    """A user-supplied artifact is missing or unsound; names the file and what is wrong."""


def external_artifact(runtime: Runtime, slug: str, quant: str, path: Path) -> Artifact:
    """A user-supplied artifact: used as is (never rebuilt), keyed by its content and by
    what decides the runtime's results (the same file on two engines, or two versions of
    one, must not share cached results)."""
    if not path.exists():
        raise ArtifactError(
            f"artifact for {slug}/{runtime.name}/{quant} not found: {path} "
            "(check [[tool.groundtruth.artifacts]] or --gt-artifact)"
        )
    problem = runtime.validate(path)
    if problem:
        raise ArtifactError(f"artifact {path} is not a sound {runtime.name} artifact: "
                            f"{problem}")
    # The runtime is part of the key: one file run by two runtimes gives two results.
    key = digest({"file": tree_sha256(path), **runtime.key_parts(quant)})
    return Artifact(runtime.name, slug, quant, path, key=f"external-{key}",
                    recipe=f"supplied by the user: {path}", external=True)
