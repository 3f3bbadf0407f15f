"""Where results come from: tool versions and the oracles' provenance (cheap, no torch import)."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_groundtruth.plugin.session import GroundtruthState

PACKAGES = ("pytest-groundtruth", "pytest", "torch", "transformers", "gguf",
            "llama-cpp-python", "torchao", "pytest-xdist", "pytest-html")


def tool_versions(state: GroundtruthState) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    for record in state.records:  # engines that ran, as they reported themselves (apr)
        if record["case"]["runtime"] == "apr" and record.get("runtime_version"):
            versions["apr"] = record["runtime_version"]
    return versions


def oracle_provenance(state: GroundtruthState) -> dict[str, Any]:
    """Per model: the oracle directory, model fingerprint and the versions that made it."""
    found: dict[str, Any] = {}
    for record in state.records:
        slug = record["case"]["model"]
        if slug not in found:
            root = Path(record["settings"]["oracle_dir"])
            files = sorted((root / slug).glob("*.json"))
            if not files:
                continue
            try:
                data = json.loads(files[0].read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            found[slug] = {
                "oracle_dir": str(Path(root) / slug),
                "source": data.get("model"),
                "model_fingerprint": data.get("model_fingerprint"),
                "dtype": data.get("dtype"),
                "device": data.get("device"),
                "transformers_version": data.get("transformers_version"),
                "torch_version": data.get("torch_version"),
            }
    return found
