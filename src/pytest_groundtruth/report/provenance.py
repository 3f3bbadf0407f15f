"""Where results come from: tool versions and the oracles' provenance (cheap, no torch import)."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_groundtruth.report.records import ParityRecord

PACKAGES = ("pytest-groundtruth", "pytest", "torch", "transformers", "gguf",
            "llama-cpp-python", "torchao", "pytest-xdist", "pytest-html")


def tool_versions(records: Sequence[ParityRecord]) -> dict[str, Any]:
    versions: dict[str, Any] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    engines = {r.case.runtime: r.runtime_version for r in records
               if r.runtime_version and not r.runtime_version.startswith("unknown")}
    if engines:  # each runtime that ran, as it reported itself (`apr --version`, ...)
        versions["runtimes"] = dict(sorted(engines.items()))
    return versions


def oracle_provenance(records: Sequence[ParityRecord]) -> dict[str, Any]:
    """Per model: the oracle directory, model fingerprint and the versions that made it."""
    found: dict[str, Any] = {}
    for record in records:
        slug = record.case.model
        if slug not in found:
            root = Path(record.settings.oracle_dir)
            files = sorted((root / slug).glob("*.json"))
            if not files:
                continue
            try:
                data = json.loads(files[0].read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            # Schema 2 and the original format name the fields alike; schema 1 had the
            # source in "model" and "dtype" for "format".
            found[slug] = {
                "oracle_dir": str(Path(root) / slug),
                "model": data.get("model"),
                "source": data.get("source", data.get("model")),
                "model_fingerprint": data.get("model_fingerprint"),
                "dtype": data.get("format", data.get("dtype")),
                "device": data.get("device", "cpu"),
                "transformers_version": data.get("transformers_version"),
                "torch_version": data.get("torch_version"),
            }
    return found
