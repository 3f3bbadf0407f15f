"""Where files go: the user cache directory, safe names, and paths kept inside their folder.

The cache root is ``$GROUNDTRUTH_CACHE_DIR`` when set, else the platform's user cache
directory (``platformdirs``: ``$XDG_CACHE_HOME/pytest-groundtruth`` or
``~/.cache/pytest-groundtruth`` on Linux). ``cache_dir`` in the configuration and
``--gt-cache-dir`` override it (:meth:`Settings.cache_root`).

Names from the configuration (roster slugs, runtime names, quantizations, prompt names)
become parts of file paths: :func:`name_problem` is the one rule they follow, and
:func:`inside` builds every path the tool writes under a folder, refusing one that would
land outside it (``..``, an absolute part, a symlink that leads out).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from pytest_groundtruth.core.failures import InputError

APP = "pytest-groundtruth"
NAME_RULE = "letters, digits, '-', '_' and '.'; not '.' or '..'"


class OutsideFolder(InputError):
    """A path the tool was about to write is not inside the folder it belongs to."""


def default_cache_dir() -> Path:
    explicit = os.environ.get("GROUNDTRUTH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return platformdirs.user_cache_path(APP, appauthor=False)


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be part of a file name (None when it can)."""
    if not isinstance(name, str) or not name:
        return "an empty name"
    if name in (".", "..") or not all(c.isalnum() or c in "-_." for c in name):
        return f"{name!r} is not a valid name ({NAME_RULE})"
    return None


def inside(folder: Path, *parts: str) -> Path:
    """``folder / parts...``, checked to stay inside ``folder`` once resolved."""
    path = folder.joinpath(*parts)
    base = folder.resolve()
    resolved = path.resolve()
    if base not in resolved.parents:
        raise OutsideFolder(f"{path} is outside {folder} (it resolves to {resolved}); "
                            "a name in the configuration leads out of its folder")
    return path
