"""Runtime lookup by name. Runtime modules import their engines lazily, so this is cheap."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_groundtruth.config.settings import Settings
    from pytest_groundtruth.runtimes.base import Runtime

_CLASSES = {
    "transformers": "pytest_groundtruth.runtimes.hf:TransformersRuntime",
    "llamacpp": "pytest_groundtruth.runtimes.llamacpp:LlamaCppRuntime",
    "torchao": "pytest_groundtruth.runtimes.torchao_rt:TorchaoRuntime",
    "apr": "pytest_groundtruth.runtimes.apr:AprRuntime",
}

NAMES = tuple(_CLASSES)


def runtime_class(name: str) -> type[Runtime]:
    try:
        module_name, _, attr = _CLASSES[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown runtime {name!r} (known: {', '.join(_CLASSES)})") from None
    cls: type[Runtime] = getattr(importlib.import_module(module_name), attr)
    return cls


def get_runtime(name: str, settings: Settings | None = None, device: str = "cpu") -> Runtime:
    """An instance of runtime ``name`` configured from ``settings``."""
    cls = runtime_class(name)
    if name == "apr":
        apr_bin = settings.apr_bin if settings else "apr"
        timeout = settings.timeout if settings else 300.0
        return cls(apr_bin=apr_bin, timeout=timeout)  # type: ignore[call-arg]
    if name == "transformers":
        return cls(device=device)  # type: ignore[call-arg]
    return cls()
