"""The environment is the lock: every nox session installs locks/<name>.txt (exact versions and
hashes, written by `nox -s lock`), and these tests fail when the installed distributions and
the lock part ways, or when pyproject.toml names a dependency that the lock lacks (a dependency
added without rerunning `nox -s lock`).
"""

from __future__ import annotations

import os
import re
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).parents[2]
LOCKS = ROOT / "locks"
PROJECT = "pytest-groundtruth"
# The installer that made the environment (virtualenv seeds pip): it is not a dependency.
INSTALLER = {"pip"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pinned(lock: Path) -> dict[str, str]:
    """Canonical name -> exact version, for every requirement of a lock file."""
    pins: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{lock}: not an exact pin: {line!r} (rerun `nox -s lock`)")
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}


def environment_problems(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """What differs between a lock and an environment, one line each (empty: they agree)."""
    problems = [f"{name} {version} is installed but not in the lock"
                for name, version in sorted(have.items())
                if name not in pins and name not in INSTALLER and name != PROJECT]
    problems += [f"{name}: the lock has {pins[name]}, {have[name]} is installed"
                 for name in sorted(pins) if name in have and have[name] != pins[name]]
    problems += [f"{name} {pins[name]} is in the lock but not installed"
                 for name in sorted(pins) if name not in have]
    return problems


def declared(extras: tuple[str, ...] = ("dev",)) -> set[str]:
    """Every distribution pyproject.toml asks for with ``extras`` (its own extras followed),
    for this interpreter."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    names: set[str] = set()
    todo = [(r, "") for r in project["dependencies"]]
    todo += [(r, extra) for extra in extras for r in optional[extra]]
    seen_extras = set(extras)
    while todo:
        text, extra = todo.pop()
        requirement = Requirement(text)
        env = {**{k: str(v) for k, v in default_environment().items()}, "extra": extra}
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        name = canonicalize_name(requirement.name)
        if name == PROJECT:
            for sub in requirement.extras - seen_extras:
                seen_extras.add(sub)
                todo += [(r, sub) for r in optional[sub]]
            continue
        names.add(name)
    return names


def test_the_lock_holds_every_declared_dependency() -> None:
    pins = pinned(LOCKS / "dev.txt")
    missing = sorted(declared() - set(pins))
    assert not missing, (f"pyproject.toml asks for {', '.join(missing)}, which locks/dev.txt "
                         "does not pin: run `nox -s lock` and commit locks/")


def test_every_lock_pins_exactly_with_hashes() -> None:
    for lock in sorted(LOCKS.glob("*.txt")):
        text = lock.read_text(encoding="utf-8")
        pins = pinned(lock)
        assert pins, f"{lock} pins nothing"
        assert text.count("--hash=sha256:") >= len(pins), f"{lock}: a pin without its hash"


def test_problems_name_each_difference() -> None:
    problems = environment_problems({"peft": "0.21.2", "numpy": "2.4.6"},
                                    {"peft": "0.22.0", "torch": "2.13.0", "pip": "26.0",
                                     PROJECT: "0.1.0"})
    assert problems == ["torch 2.13.0 is installed but not in the lock",
                        "peft: the lock has 0.21.2, 0.22.0 is installed",
                        "numpy 2.4.6 is in the lock but not installed"]


def test_the_environment_is_the_lock() -> None:
    locks = os.environ.get("GROUNDTRUTH_LOCK")
    if not locks:
        pytest.skip("GROUNDTRUTH_LOCK is not set, so this environment is not one a nox session "
                    "built from locks/: run the tests through `nox -s tests` to check it")
    pins: dict[str, str] = {}
    for lock in locks.split(os.pathsep):
        pins.update(pinned(Path(lock)))
    problems = environment_problems(pins, installed())
    assert not problems, (f"this environment is not {locks}:\n  " + "\n  ".join(problems)
                          + "\nrecreate it (`nox -s tests --reuse-venv=no`) or, after a deliberate "
                          "change of pyproject.toml, rerun `nox -s lock` and commit locks/")
