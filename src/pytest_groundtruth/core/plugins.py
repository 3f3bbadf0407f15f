"""Entry points: how built-in and third-party parts register (suites, runtimes), and
which versions of packages are installed.

A group maps names to ``module:attribute`` objects; nothing is imported until a name is
loaded, so listing the names is cheap. The built-in suites and runtimes register in this
package's own pyproject.toml, exactly as another package would.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import Any

SUITES = "pytest_groundtruth.suites"
RUNTIMES = "pytest_groundtruth.runtimes"


class PluginError(LookupError):
    """A name is not registered in a group, or its entry point does not load."""


@cache
def package_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (None when it is not installed), read
    from its metadata without importing it; once per process (each lookup scans sys.path)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@cache
def registered(group: str) -> dict[str, EntryPoint]:
    """name -> entry point, for every installed distribution (first one wins on a clash)."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=group):
        found.setdefault(point.name, point)
    return found


def load(group: str, name: str) -> Any:
    """The object registered as ``name`` in ``group``."""
    points = registered(group)
    if name not in points:
        raise PluginError(
            f"{name!r} is not registered in entry-point group {group!r} "
            f"(registered: {', '.join(sorted(points)) or 'none'})"
        )
    try:
        return points[name].load()
    except Exception as exc:  # an installed plugin that fails to import: say which
        raise PluginError(f"entry point {name!r} = {points[name].value!r} of group "
                          f"{group!r} does not load: {type(exc).__name__}: {exc}") from exc


@cache
def ranked(group: str) -> tuple[str, ...]:
    """The names of ``group`` ordered by their objects' ``rank`` (then by name)."""
    return tuple(sorted(registered(group), key=lambda n: (getattr(load(group, n), "rank", 100), n)))
