"""Runtimes by name: the built-in kinds and third-party ones, all through entry points.

A name in ``runtimes`` is either a registered kind used as is (``llamacpp``) or a
runtime configured in ``[tool.groundtruth.runtime.<name>]``, whose ``kind`` names the
registered class and whose other keys are its options (:meth:`Runtime.from_config`).
Building a runtime imports its module but never its engine.
"""

from __future__ import annotations

from pytest_groundtruth.config.settings import ConfigError, Settings
from pytest_groundtruth.core import plugins
from pytest_groundtruth.runtimes.base import Runtime


def runtime_class(kind: str) -> type[Runtime]:
    try:
        cls = plugins.load(plugins.RUNTIMES, kind)
    except plugins.PluginError as exc:
        raise ConfigError(f"unknown runtime kind: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise ConfigError(f"runtime kind {kind!r} is registered as {cls!r}, not a Runtime class")
    return cls


def make_runtime(name: str, settings: Settings, device: str = "cpu") -> Runtime:
    """The runtime ``name`` as ``settings`` configure it, for ``device``."""
    table = dict(settings.runtime_options.get(name, {}))
    kind = table.pop("kind", name)
    return runtime_class(kind).from_config(name, table, settings, device)
