"""``groundtruth clean``: drop the cached artifacts and results of the selected runtimes.

(``groundtruth clean --max-size SIZE`` trims the whole cache to a size instead, least
recently used first: :func:`pytest_groundtruth.store.entries.trim`.)

The first step of the original workflow's ``make recheck`` (clean, convert, check: the
run after an engine upgrade, or after an engine was rebuilt without a new version
number, which the cache keys cannot see). Only the selected models' entries of the
selected runtimes go; the rest of the cache, shared with other runs, stays.

What belongs to a runtime:

* artifact directories whose manifest names the runtime (conversions and reimports),
  and the GGUF exports of those artifacts;
* the artifact keys of a runtime that converts at load time (no directory: the key is
  computed as :func:`~pytest_groundtruth.store.artifacts.prepare` computes it);
* result files tagged with one of those artifact keys. Result files written before
  results were tagged cannot be attributed: they are counted, and ``--gt-no-cache``
  reruns every engine regardless.

Each directory is removed under the artifact's lock, so a concurrent build of the same
artifact is never cut in half. ``dry_run``: the same choice, nothing removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.core.atomic import discard, locked
from pytest_groundtruth.models.sources import ModelUnavailable, resolve
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare
from pytest_groundtruth.store.entries import Entry, entries


@dataclass
class Cleaned:
    artifacts: list[Entry] = field(default_factory=list)
    results: int = 0
    results_size: int = 0  # bytes
    untagged: int = 0  # result files that name no artifact (written by older versions)
    notes: list[str] = field(default_factory=list)


def _manifests(root: Path, models: Iterable[str]) -> Iterable[tuple[Entry, dict[str, Any]]]:
    wanted = set(models)
    for entry in entries(root, ("artifacts",)):
        if entry.path.parent.name not in wanted:
            continue
        try:
            data = json.loads((entry.path / "manifest.json").read_text())
        except (OSError, ValueError):
            continue  # a half-written entry: the cache rebuilds it anyway
        if isinstance(data, dict):
            yield entry, data


def clean(settings: Settings, root: Path, dry_run: bool = False) -> Cleaned:
    """Remove ``settings.runtimes``' artifacts and results of ``settings.models``."""
    out = Cleaned()
    runtimes = set(settings.runtimes)
    keys = _load_time_keys(settings, root, out.notes)
    doomed: list[Entry] = []
    exports: list[tuple[Entry, str]] = []
    for entry, manifest in _manifests(root, settings.models):
        if manifest.get("runtime") in runtimes:
            doomed.append(entry)
            keys.add(str(manifest.get("key")))
        elif "export_of" in manifest:
            exports.append((entry, str(manifest["export_of"])))
    doomed += [entry for entry, of in exports if of in keys]
    for entry in doomed:
        if not dry_run:
            with locked(entry.path):
                discard(entry.path)
        out.artifacts.append(entry)
    for entry in entries(root, ("results",)):
        try:
            data = json.loads(entry.path.read_text())
        except (OSError, ValueError):
            continue
        tag = data.get("artifact") if isinstance(data, dict) else None
        if tag is None:
            out.untagged += 1
        elif tag in keys:
            if not dry_run:
                entry.path.unlink(missing_ok=True)
            out.results += 1
            out.results_size += entry.size
    return out


def _load_time_keys(settings: Settings, root: Path, notes: list[str]) -> set[str]:
    """Artifact keys of the selected runtimes that convert at load time (no directory)."""
    keys: set[str] = set()
    cache = ArtifactCache(root)  # not written: these runtimes build nothing
    for name in sorted(set(settings.runtimes)):
        runtime = make_runtime(name, settings)
        if runtime.builds_artifacts:
            continue
        for slug in settings.models:
            try:
                model = resolve(settings.spec(slug), root, settings.root)
            except ModelUnavailable as exc:
                notes.append(f"{slug}: not resolved here, its {name} results are kept ({exc})")
                continue
            keys.update(prepare(runtime, model, quant, cache).key
                        for quant in runtime.quantizations)
    return keys
