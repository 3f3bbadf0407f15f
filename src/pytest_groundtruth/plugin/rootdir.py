"""The rootdir trap: ``pytest --gt-cache-dir /path`` silently loses the project's config.

pytest chooses its rootdir and configuration file from the command line's paths before
it loads plugins; at that moment ``--gt-cache-dir`` is an unknown option and ``/path``,
an existing folder, counts as a test path. The common ancestor of the test paths moves,
and with it the rootdir: ``[tool.pytest.ini_options]`` and ``[tool.groundtruth]`` are
not read. Nothing can change that choice afterwards, so the run stops with a usage
error that says to write ``--gt-cache-dir=/path``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_groundtruth.config.options import EQUALS_FORM, separate_values

# Options that fix the rootdir or configuration file: the trap cannot move them.
_FIXED = ("--rootdir", "-c", "--config-file", "--inifile")


def _dirs(args: Sequence[str], cwd: Path) -> list[Path]:
    """The existing paths among ``args`` as pytest reads them (a file counts by its folder)."""
    found = []
    for arg in args:
        if arg.startswith("-"):
            continue
        path = (cwd / arg.split("::", 1)[0]).absolute()
        if path.exists():
            found.append(path if path.is_dir() else path.parent)
    return found


def _ancestor(dirs: Sequence[Path], cwd: Path) -> Path:
    return Path(os.path.commonpath(dirs)) if dirs else cwd


def trapped(args: Sequence[str], positional: Sequence[str], cwd: Path) -> list[str]:
    """The ``--gt-X VALUE`` pairs in ``args`` that moved the test paths' common ancestor
    out of where pytest would otherwise start looking for its configuration (a value
    below it, such as ``reports/r.json``, leads pytest up to the same file)."""
    if any(a == f or a.startswith(f + "=") for a in args for f in _FIXED):
        return []
    pairs = [(flag, value) for flag, value in separate_values(args) if _dirs([value], cwd)]
    if not pairs:
        return []
    before = _ancestor(_dirs(positional, cwd), cwd)
    after = _ancestor(_dirs([*positional, *(v for _, v in pairs)], cwd), cwd)
    if after == before or before in after.parents:
        return []
    return [f"{flag} {value}" for flag, value in pairs]


def check_rootdir(config: pytest.Config) -> None:
    """Stop with a usage error when an option value moved pytest's rootdir (checked once,
    on the controller: pytest-xdist workers inherit its rootdir)."""
    if hasattr(config, "workerinput"):
        return
    params = config.invocation_params
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *params.args]
    positional = config.args if config.args_source == pytest.Config.ArgsSource.ARGS else []
    found = trapped(args, positional, params.dir)
    if found:
        raise pytest.UsageError(
            f"{', '.join(found)}: pytest took this option value for a test path and chose "
            f"the rootdir {config.rootpath} (configuration: {config.inipath or 'none found'}); "
            + EQUALS_FORM
        )
