"""Where files go: the user cache directory.

The cache root is ``$GROUNDTRUTH_CACHE_DIR`` when set, else the platform's user cache
directory (``platformdirs``: ``$XDG_CACHE_HOME/pytest-groundtruth`` or
``~/.cache/pytest-groundtruth`` on Linux). ``cache_dir`` in the configuration and
``--gt-cache-dir`` override it (:meth:`Settings.cache_root`).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "pytest-groundtruth"


def default_cache_dir() -> Path:
    explicit = os.environ.get("GROUNDTRUTH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return platformdirs.user_cache_path(APP, appauthor=False)
