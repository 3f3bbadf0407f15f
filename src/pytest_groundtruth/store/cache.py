"""Content-addressed caches: converted artifacts and engine generations.

Layout under the cache root (``--gt-cache-dir``, ``cache_dir`` in the config, or
``$XDG_CACHE_HOME/pytest-groundtruth``)::

    models/<slug>-<hash>/                   float32 HF directories (sources.py)
    artifacts/<slug>/<runtime>-<quant>-<key>/artifact[.gguf|.apr]  + manifest.json
    generations/<hash>.json                 one cached Generation each
    builds.log                              one JSON line per artifact conversion

An artifact's key hashes the source model's fingerprint with the runtime's
:meth:`~pytest_groundtruth.runtimes.base.Runtime.key_parts` (runtime, quantization,
engine and exporter versions). A per-process file lock makes concurrent pytest-xdist
workers build each artifact once; the build goes to a temporary path and is renamed
into place; the manifest records the artifact's SHA-256, so a partial or corrupted
artifact is detected and rebuilt.

``refresh_token``: when set (``--gt-no-cache``), entries not produced under that token
are ignored and rebuilt, once per run, even with several workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.core.atomic import atomic_path, atomic_write_text, locked
from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.models.sources import file_sha256
from pytest_groundtruth.runtimes.base import Artifact, Generation

if TYPE_CHECKING:
    from pytest_groundtruth.models.sources import ResolvedModel
    from pytest_groundtruth.runtimes.base import Runtime


def default_cache_dir() -> Path:
    explicit = os.environ.get("GROUNDTRUTH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pytest-groundtruth"


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def tree_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (names and contents)."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


class ArtifactCache:
    def __init__(self, root: Path, refresh_token: str | None = None) -> None:
        self.root = root
        self.refresh_token = refresh_token

    @property
    def builds_log(self) -> Path:
        return self.root / "builds.log"

    def key(self, runtime: Runtime, model: ResolvedModel, quant: str) -> str:
        return _digest({"model": model.fingerprint, **runtime.key_parts(quant)})

    def artifact(self, runtime: Runtime, model: ResolvedModel, quant: str) -> Artifact:
        """The cached artifact, building it (once across processes) when missing or unsound."""
        return self._get(
            runtime, model, quant, self.key(runtime, model, quant), f"{runtime.name}-{quant}",
            lambda tmp: runtime.build(model, quant, tmp),
        )

    def reimported(
        self, runtime: Runtime, model: ResolvedModel, quant: str, gguf: Path
    ) -> Artifact:
        """An artifact of ``runtime`` rebuilt from ``gguf`` (the roundtrip's second half)."""
        key = _digest({"reimport": file_sha256(gguf), **runtime.key_parts(quant)})
        return self._get(
            runtime, model, quant, key, f"{runtime.name}-{quant}-reimport",
            lambda tmp: runtime.reimport(gguf, model, quant, tmp),
        )

    def _get(
        self,
        runtime: Runtime,
        model: ResolvedModel,
        quant: str,
        key: str,
        label: str,
        build: Callable[[Path], str],
    ) -> Artifact:
        directory = self.root / "artifacts" / model.slug / f"{label}-{key[:16]}"
        target = directory / f"artifact{runtime.artifact_suffix(quant)}"
        manifest_path = directory / "manifest.json"
        with locked(directory):
            manifest = self._sound_manifest(runtime, key, target, manifest_path)
            if manifest is None:
                manifest = self._build(runtime, model, quant, key, target, manifest_path, build)
        return Artifact(
            runtime=runtime.name,
            model=model.slug,
            quant=quant,
            path=target,
            key=key,
            recipe=manifest["recipe"],
            details={"sha256": manifest["sha256"], "built_seconds": str(manifest["seconds"])},
        )

    def _sound_manifest(
        self, runtime: Runtime, key: str, target: Path, manifest_path: Path
    ) -> dict[str, Any] | None:
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != key or not target.exists():
            return None
        if self.refresh_token is not None and manifest.get("token") != self.refresh_token:
            return None
        if tree_sha256(target) != manifest.get("sha256") or runtime.validate(target):
            return None
        return manifest

    def _build(
        self,
        runtime: Runtime,
        model: ResolvedModel,
        quant: str,
        key: str,
        target: Path,
        manifest_path: Path,
        build: Callable[[Path], str],
    ) -> dict[str, Any]:
        manifest_path.unlink(missing_ok=True)  # never a manifest beside a half-built artifact
        start = time.perf_counter()
        with atomic_path(target) as tmp:
            recipe = build(tmp)
            problem = runtime.validate(tmp)
            if problem:
                raise RuntimeError(
                    f"{runtime.name} built an unsound {quant} artifact of {model.slug}: {problem}"
                )
        seconds = round(time.perf_counter() - start, 3)
        manifest = {
            "key": key,
            "model": model.slug,
            "model_fingerprint": model.fingerprint,
            **runtime.key_parts(quant),
            "recipe": recipe,
            "sha256": tree_sha256(target),
            "seconds": seconds,
            "token": self.refresh_token,
        }
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        line = json.dumps({"key": key, "model": model.slug, "runtime": runtime.name,
                           "quant": quant, "pid": os.getpid(), "seconds": seconds})
        with self.builds_log.open("a") as log:
            log.write(line + "\n")
        return manifest


GENERATION_SCHEMA = 1


def generation_to_dict(gen: Generation) -> dict[str, Any]:
    data = asdict(gen)
    data["topk"] = [asdict(t) for t in gen.topk] if gen.topk is not None else None
    return data


def generation_from_dict(data: dict[str, Any]) -> Generation:
    topk = data.get("topk")
    return Generation(
        tokens=tuple(data["tokens"]),
        text=data["text"],
        prompt_tokens=tuple(data["prompt_tokens"]),
        stop_reason=data["stop_reason"],
        seconds=float(data["seconds"]),
        call=data["call"],
        topk=None
        if topk is None
        else tuple(TopK(tuple(t["ids"]), tuple(t["logprobs"])) for t in topk),
    )


class GenerationCache:
    """Engine results keyed by artifact key and what was asked (JSON files).

    Generations are keyed by prompt, ``max_new_tokens`` and ``top_k``; other results
    (perplexity) by a ``what`` string that names the input (e.g. a text's hash).
    """

    def __init__(self, root: Path, refresh_token: str | None = None) -> None:
        self.root = root / "generations"
        self.refresh_token = refresh_token

    def _path(self, artifact_key: str, what: Any) -> Path:
        name = _digest([GENERATION_SCHEMA, artifact_key, what])
        return self.root / f"{name[:40]}.json"

    def get_json(self, artifact_key: str, what: Any) -> dict[str, Any] | None:
        try:
            data = json.loads(self._path(artifact_key, what).read_text())
            if self.refresh_token is not None and data.get("token") != self.refresh_token:
                return None
            result: dict[str, Any] = data["result"]
            return result
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # missing or unreadable: the engine runs again

    def put_json(self, artifact_key: str, what: Any, result: dict[str, Any]) -> None:
        payload = {"token": self.refresh_token, "result": result}
        atomic_write_text(self._path(artifact_key, what), json.dumps(payload) + "\n")

    def get(
        self, artifact_key: str, prompt: str, max_new_tokens: int, top_k: int
    ) -> Generation | None:
        data = self.get_json(artifact_key, ["generate", prompt, max_new_tokens, top_k])
        try:
            return None if data is None else generation_from_dict(data)
        except (KeyError, TypeError, ValueError):
            return None

    def put(
        self, artifact_key: str, prompt: str, max_new_tokens: int, top_k: int, gen: Generation
    ) -> None:
        self.put_json(artifact_key, ["generate", prompt, max_new_tokens, top_k],
                      generation_to_dict(gen))
