"""Content-addressed artifacts: converted models, reimports and exports, built once.

Layout under the cache root::

    artifacts/<slug>/<label>-<key>/artifact[.gguf|.apr]  + manifest.json
    builds.log                                           one JSON line per build

The cache knows nothing about runtimes: it is handed a :class:`Recipe` (what decides
the bytes, how to build them, how to tell a sound file from a broken one). A file lock
per artifact makes concurrent pytest-xdist workers build it once; the build goes to a
temporary path and is renamed into place; the manifest records the artifact's SHA-256,
so a partial or corrupted artifact is detected and rebuilt. The recipe's ``validate`` runs
on the freshly built file; a cached file whose SHA-256 matches the manifest's is the
very file that passed it, so it is not read again.

A warm run does not hash to find an artifact: the manifest also records each file's
size, mtime and inode as built, and a file whose three are unchanged is taken as built
(a truncation, an overwrite or a replacement changes them); any difference means a full
hash, and a rebuild when the content differs. Before an engine opens an artifact
(:meth:`ArtifactCache.verify`, once per process and artifact) its content is hashed and
compared with the manifest's SHA-256, so a file corrupted in place with its size and
mtime put back is found and rebuilt (the reason goes to ``builds.log``, the manifest
and stderr), never blamed on the converter. A run whose results are all cached opens no
engine and reads no artifact; one that does reads each opened artifact once more (about
0.3 s per GB from the page cache, beside the engine's own load).

A read-only cache (a CI cache restored read-only) is used as it is: locks are skipped
where nothing can be written (:func:`~pytest_groundtruth.core.atomic.locked`), and an
artifact missing from it, or a full disk, is a
:class:`~pytest_groundtruth.core.failures.CacheUnusable` naming the folder and the
disk, never the engine's failure. Stale temporaries of a killed build are swept at
every use of the artifact's folder.

``refresh_token``: when set (``--gt-no-cache``), entries not produced under that token
are ignored and rebuilt, once per run, even with several workers.

The functions at the bottom make the recipes of a runtime (:func:`prepare`,
:func:`reimported`, :func:`exported`): that is where the runtime's methods are called.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_groundtruth.core.atomic import (
    atomic_path,
    atomic_write_text,
    cache_problem,
    is_read_only,
    locked,
    sweep,
)
from pytest_groundtruth.core.failures import CacheUnusable
from pytest_groundtruth.core.hashing import digest, file_sha256, tree_sha256
from pytest_groundtruth.core.memory import trim_heap
from pytest_groundtruth.core.paths import inside
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact, Runner, Runtime
from pytest_groundtruth.store.pool import close_open_runners


@dataclass(frozen=True)
class Recipe:
    """How to make one artifact."""

    model: str  # roster slug: the folder it goes in
    label: str  # e.g. "llamacpp-int8", "llamacpp-int4-reimport"
    key_parts: Mapping[str, Any]  # everything that decides the bytes (hashed into the key)
    suffix: str  # ".gguf", ".apr", "" for a directory
    build: Callable[[Path], str]  # write the artifact at the path; return how (for reports)
    validate: Callable[[Path], str | None]  # why a file is unsound, or None

    @property
    def key(self) -> str:
        return digest(dict(self.key_parts))


@dataclass(frozen=True)
class Built:
    path: Path
    key: str
    recipe: str  # the build's own account: command line or call
    sha256: str
    seconds: float


class ArtifactCache:
    def __init__(self, root: Path, refresh_token: str | None = None) -> None:
        self.root = root
        self.refresh_token = refresh_token
        self.built = 0  # artifacts this process built (cache misses)
        self._recipes: dict[Path, Recipe] = {}  # what get() returned: verify() rebuilds them
        self._verified: set[Path] = set()

    @property
    def builds_log(self) -> Path:
        return self.root / "builds.log"

    def get(self, recipe: Recipe) -> Built:
        """The artifact of ``recipe``, built (once across processes) when missing or unsound."""
        key = recipe.key
        directory = inside(self.root / "artifacts", recipe.model, f"{recipe.label}-{key[:16]}")
        target = directory / f"artifact{recipe.suffix}"
        manifest_path = directory / "manifest.json"
        with locked(directory):
            sweep(target)  # a killed build's temporary
            manifest = self._sound_manifest(recipe, key, target, manifest_path)
            if manifest is None:
                manifest = self._build(recipe, key, target, manifest_path)
        self._recipes[target] = recipe
        return Built(target, key, manifest["recipe"], manifest["sha256"], manifest["seconds"])

    def verify(self, target: Path) -> str:
        """Before an engine reads the artifact at ``target`` (got from this cache): its
        content against the SHA-256 recorded at its build, once per process; a mismatch
        rebuilds it. Returns why it was rebuilt, or ""."""
        recipe = self._recipes.get(target)
        if recipe is None or target in self._verified:
            return ""
        manifest_path = target.parent / "manifest.json"
        note = ""
        with locked(target.parent):
            try:
                recorded = json.loads(manifest_path.read_text()).get("sha256")
            except (OSError, ValueError, AttributeError):
                recorded = None
            found = tree_sha256(target) if target.exists() else "missing"
            if found != recorded:
                note = (f"the cached {target} was modified after it was built (SHA-256 "
                        f"{found[:12]}, built as {str(recorded)[:12]}): rebuilt; the "
                        "converter was not at fault")
                print(f"groundtruth: {note}", file=sys.stderr)
                self._build(recipe, recipe.key, target, manifest_path, note)
        self._verified.add(target)
        return note

    def _sound_manifest(self, recipe: Recipe, key: str, target: Path, manifest_path: Path
                        ) -> dict[str, Any] | None:
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != key or not target.exists():
            return None
        if self.refresh_token is not None and manifest.get("token") != self.refresh_token:
            return None
        if manifest.get("files") == file_stats(target):
            return manifest  # untouched since it was built
        if tree_sha256(target) != manifest.get("sha256"):
            return None  # changed since it was built and validated: rebuilt
        manifest["files"] = file_stats(target)  # same bytes (copied, touched): trust them now
        try:
            atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        except OSError as exc:
            if not is_read_only(exc):
                raise
        return manifest

    def _build(self, recipe: Recipe, key: str, target: Path, manifest_path: Path,
               note: str = "") -> dict[str, Any]:
        doing = f"building {recipe.label} of {recipe.model} into {target.parent}"
        try:
            return self._write(recipe, key, target, manifest_path, note, doing)
        except CacheUnusable:
            raise
        except Exception as exc:
            problem = cache_problem(target.parent, exc, doing)
            if problem is not None:
                raise problem from exc
            raise

    def _write(self, recipe: Recipe, key: str, target: Path, manifest_path: Path, note: str,
               doing: str) -> dict[str, Any]:
        manifest_path.unlink(missing_ok=True)  # never a manifest beside a half-built artifact
        start = time.perf_counter()
        with atomic_path(target) as tmp:
            try:
                how = recipe.build(tmp)
            except Exception as exc:  # a full disk, seen while the partial file still fills it
                problem = cache_problem(target.parent, exc, doing)
                if problem is not None:
                    raise problem from exc
                raise
            unsound = recipe.validate(tmp)
            if unsound:
                raise RuntimeError(f"{recipe.label} built an unsound artifact of "
                                   f"{recipe.model}: {unsound}")
        seconds = round(time.perf_counter() - start, 3)
        manifest = {
            "key": key,
            "model": recipe.model,
            **recipe.key_parts,
            "recipe": how,
            "sha256": tree_sha256(target),
            "files": file_stats(target),
            "seconds": seconds,
            "token": self.refresh_token,
            **({"rebuilt": note} if note else {}),
        }
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        trim_heap()  # the conversion's tensors, freed, go back to the OS
        self.built += 1
        line = json.dumps({"key": key, "model": recipe.model, "label": recipe.label,
                           "pid": os.getpid(), "seconds": seconds,
                           **({"rebuilt": note} if note else {})})
        with self.builds_log.open("a") as log:
            log.write(line + "\n")
        return manifest


def file_stats(target: Path) -> dict[str, list[int]]:
    """Size, mtime (ns) and inode of the artifact's file, or of each file in its directory."""
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    out = {}
    for file in files:
        stat = file.stat()
        out[str(file.relative_to(target)) if file != target else ""] = [
            stat.st_size, stat.st_mtime_ns, stat.st_ino]
    return out


# --------------------------------------------------------------------------- recipes


def _artifact(runtime: Runtime, model: ResolvedModel, quant: str, built: Built) -> Artifact:
    return Artifact(runtime=runtime.name, model=model.slug, quant=quant, path=built.path,
                    key=built.key, recipe=built.recipe,
                    details={"sha256": built.sha256, "built_seconds": str(built.seconds)})


def prepare(runtime: Runtime, model: ResolvedModel, quant: str, cache: ArtifactCache
            ) -> Artifact:
    """The artifact of ``model`` at ``quant`` for ``runtime``: built once into ``cache``, or,
    for a runtime that converts at load time, the model directory itself."""
    runtime.check_quant(quant)
    parts = {"model": model.fingerprint, **runtime.key_parts(quant)}
    if not runtime.builds_artifacts:
        return Artifact(runtime=runtime.name, model=model.slug, quant=quant, path=model.path,
                        key=digest(parts), recipe=runtime.describe(model.path, quant))
    recipe = Recipe(model.slug, f"{runtime.name}-{quant}", parts, runtime.artifact_suffix(quant),
                    lambda out: runtime.build(model, quant, out), runtime.validate)
    return _artifact(runtime, model, quant, cache.get(recipe))


def reimported(runtime: Runtime, model: ResolvedModel, quant: str, gguf: Path,
               cache: ArtifactCache) -> Artifact:
    """An artifact of ``runtime`` rebuilt from ``gguf`` (the roundtrip's second half)."""
    parts = {"reimport": file_sha256(gguf), **runtime.key_parts(quant)}

    def build(out: Path) -> str:
        # The reimport dequantizes the whole GGUF through transformers (a float32 model
        # and its serialization at once): the runner the export came from is not needed
        # beside it, and the next one opened is the reimported artifact's anyway.
        if close_open_runners():
            trim_heap()
        return runtime.reimport(gguf, model, quant, out)

    recipe = Recipe(model.slug, f"{runtime.name}-{quant}-reimport", parts,
                    runtime.artifact_suffix(quant), build, runtime.validate)
    return _artifact(runtime, model, quant, cache.get(recipe))


def exported(artifact: Artifact, runner: Callable[[], Runner],
             validate: Callable[[Path], str | None], cache: ArtifactCache) -> Built:
    """``artifact`` exported as GGUF by its runner (the roundtrip's first half); ``runner``
    opens it only when the export is not cached yet."""
    recipe = Recipe(artifact.model, f"{artifact.runtime}-{artifact.quant}-export",
                    {"export_of": artifact.key}, ".gguf",
                    lambda out: runner().export_gguf(out), validate)
    return cache.get(recipe)
