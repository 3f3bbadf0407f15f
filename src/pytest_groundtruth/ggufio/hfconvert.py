"""llama.cpp's own converter, ``convert_hf_to_gguf.py``, as a supported conversion path.

The converter is the one of the installed llama-cpp-python: its source distribution
(sdist) vendors llama.cpp, ``convert_hf_to_gguf.py``, its ``conversion`` package and the
``gguf-py`` it imports. The sdist is looked up at ``$GROUNDTRUTH_LLAMACPP_SDIST``, else
``<cache>/sdist/llama_cpp_python-<version>.tar.gz``; the three parts are unpacked once into
``<cache>/llama.cpp/<version>/`` (under a lock, renamed into place, so concurrent workers
and interrupted runs are safe). Without the sdist, :func:`converter_script` raises
:class:`~pytest_groundtruth.core.failures.RuntimeUnavailable` whose message is the command
that fetches it (:func:`fetch_command`), so tests that need it skip with that fix.

:func:`convert` runs the script in a child process (:mod:`~pytest_groundtruth.core.process`)
with this interpreter (it needs torch,
transformers and, for SentencePiece vocabularies, sentencepiece).
:func:`tokenizer_pre` reproduces the converter's choice of ``tokenizer.ggml.pre`` (the
SHA-256 of the tokenizer's ids for its probe text, looked up in its table) for our own
exporter, when a roster entry does not say.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path

from pytest_groundtruth.core import process
from pytest_groundtruth.core.atomic import atomic_path, final_path, locked
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.core.paths import default_cache_dir
from pytest_groundtruth.core.usage import touch

SDIST_ENV = "GROUNDTRUTH_LLAMACPP_SDIST"
PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
OUTTYPES = ("f32", "f16", "bf16", "q8_0")


def llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def sdist_path(cache_dir: Path | None = None) -> Path | None:
    """Where the sdist of the installed llama-cpp-python is expected (None: not installed)."""
    explicit = os.environ.get(SDIST_ENV)
    if explicit:
        return Path(explicit)
    version = llama_cpp_version()
    if version is None:
        return None
    return (cache_dir or default_cache_dir()) / "sdist" / f"llama_cpp_python-{version}.tar.gz"


def fetch_args(dest: Path) -> list[str]:
    """``pip download`` arguments that fetch the installed llama-cpp-python's sdist into
    ``dest`` (after ``pip``: run as ``python -m pip``)."""
    version = llama_cpp_version() or "<version>"
    return ["download", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={version}",
            "-d", str(dest)]


def fetch_command(cache_dir: Path | None = None) -> str:
    """The command that puts the sdist where :func:`sdist_path` looks."""
    return " ".join(["pip", *fetch_args((cache_dir or default_cache_dir()) / "sdist")])


def unavailable(cache_dir: Path | None = None) -> str | None:
    """Why llama.cpp's converter cannot run here (with the fix), or None."""
    if llama_cpp_version() is None:
        return ("llama.cpp's converter comes with llama-cpp-python's sdist, and "
                "llama-cpp-python is not installed: pip install llama-cpp-python")
    path = sdist_path(cache_dir)
    assert path is not None
    if path.is_file():
        return None
    if os.environ.get(SDIST_ENV):
        return f"{SDIST_ENV}={path}: no such file"
    return (f"llama.cpp's convert_hf_to_gguf.py is not at hand: its source is the "
            f"llama-cpp-python sdist, expected at {path}; fetch it where the package index "
            f"is reachable (offline, copy the file there): `{fetch_command(cache_dir)}`, or "
            f"set {SDIST_ENV} to the sdist")


FETCH_TIMEOUT = 900.0  # pip download of the sdist (~77 MB)
_FETCH_FAILED: dict[Path, str] = {}  # sdist path -> why fetching it failed in this process


def fetch_converter(cache_dir: Path | None = None, timeout: float = FETCH_TIMEOUT) -> None:
    """Put llama.cpp's converter at hand: where the installed llama-cpp-python's sdist is
    not in the cache, fetch it there with ``pip download`` through the subprocess harness
    (once, under a lock; renamed into place). Where that fails (offline, no such release
    on the index), :class:`RuntimeUnavailable` names the command to run where the index
    is reachable, and later calls in this process say so at once."""
    reason = unavailable(cache_dir)
    target = sdist_path(cache_dir)
    if reason is None or target is None or os.environ.get(SDIST_ENV):
        if reason:
            raise RuntimeUnavailable(reason)
        return
    if target in _FETCH_FAILED:  # tried once in this process: do not wait on pip again
        raise RuntimeUnavailable(_FETCH_FAILED[target])
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target):
        if target.is_file():  # another worker fetched it meanwhile
            return
        try:
            _fetch(target, reason, timeout)
        except RuntimeUnavailable as exc:
            _FETCH_FAILED[target] = str(exc)
            raise


def _fetch(target: Path, reason: str, timeout: float) -> None:
    """``pip download`` the sdist into a temporary beside ``target``, then rename."""
    with tempfile.TemporaryDirectory(prefix="gt-sdist-", dir=target.parent) as tmp:
        argv = [sys.executable, "-m", "pip", *fetch_args(Path(tmp))]
        try:
            done = process.invoke(argv, timeout, tool="pip download")
        except (EngineFailure, RuntimeUnavailable) as exc:
            raise RuntimeUnavailable(f"{reason} (fetching it failed: "
                                     f"{str(exc).splitlines()[0]})") from exc
        found = sorted(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not found:
            raise RuntimeUnavailable(
                f"{reason} (fetching it failed: pip exited {done.returncode}: "
                f"{process.tail(done.stderr.strip(), 3, 400)})")
        found[0].replace(target)


def converter_dir(cache_dir: Path | None = None) -> Path:
    """The unpacked converter (``convert_hf_to_gguf.py``, ``conversion/``, ``gguf-py/``)."""
    reason = unavailable(cache_dir)
    if reason:
        raise RuntimeUnavailable(reason)
    sdist = sdist_path(cache_dir)
    assert sdist is not None
    digest = hashlib.sha256(str(sdist.stat().st_size).encode() + sdist.name.encode())
    target = ((cache_dir or default_cache_dir()) / "llama.cpp"
              / f"{llama_cpp_version()}-{digest.hexdigest()[:8]}")
    with locked(target):
        if not (target / "convert_hf_to_gguf.py").is_file():
            with atomic_path(target) as tmp:
                _unpack(sdist, tmp)
        touch(target)
    return target


def _unpack(sdist: Path, out: Path) -> None:
    out.mkdir(parents=True)
    marker = "/vendor/llama.cpp/"
    try:
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                _, found, inner = member.name.partition(marker)
                if not found or not inner.startswith(PARTS):
                    continue
                member.name = inner
                tar.extract(member, out, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise RuntimeUnavailable(f"{sdist}: not a readable llama-cpp-python sdist ({exc}); "
                                 f"fetch it again: `{fetch_command()}`") from exc
    if not (out / "convert_hf_to_gguf.py").is_file():
        raise RuntimeUnavailable(f"{sdist} has no vendor/llama.cpp/convert_hf_to_gguf.py")


def converter_script(cache_dir: Path | None = None) -> Path:
    return converter_dir(cache_dir) / "convert_hf_to_gguf.py"


def convert(model_dir: Path, outtype: str, out: Path, cache_dir: Path | None = None,
            timeout: float = 1800.0) -> str:
    """Run ``convert_hf_to_gguf.py MODEL --outtype OUTTYPE --outfile OUT``; return the
    command line. A failure raises :class:`EngineFailure` with the converter's stderr."""
    if outtype not in OUTTYPES:
        raise ValueError(f"llama.cpp's converter writes {', '.join(OUTTYPES)}, not {outtype!r}")
    argv = command(model_dir, outtype, out, cache_dir)
    done = process.invoke(argv, timeout, tool="llama.cpp's converter")
    if done.returncode != 0 or not out.is_file():
        raise process.failure(FailureKind.CRASHED, f"llama.cpp's converter failed on "
                              f"{model_dir} (exit {done.returncode})", done)
    return convert_call(model_dir, outtype, out, cache_dir)


def command(model_dir: Path, outtype: str, out: Path, cache_dir: Path | None = None
            ) -> list[str]:
    """The child process that converts ``model_dir`` to ``out`` at ``outtype``."""
    return [sys.executable, str(converter_script(cache_dir)), str(model_dir), "--outtype",
            outtype, "--outfile", str(out)]


def convert_call(model_dir: Path, outtype: str, out: Path, cache_dir: Path | None = None
                 ) -> str:
    """The command line :func:`convert` runs, as a user would type it, naming the file it
    makes (not the temporary it writes first, whose name is random)."""
    return "python " + " ".join(command(model_dir, outtype, final_path(out), cache_dir)[1:])


# --------------------------------------------------------------------------- pre-tokenizer

_HASH = re.compile(r'if chkhsh == "([0-9a-f]{64})":\s*(?:#[^\n]*\n\s*)*res = "([^"]+)"')
_CHKTXT = re.compile(r"^\s*chktxt = (.+)$", re.MULTILINE)


def pre_tokenizer_table(cache_dir: Path | None = None) -> tuple[str, dict[str, str]]:
    """The converter's probe text and its hash -> ``tokenizer.ggml.pre`` table."""
    root = converter_dir(cache_dir)
    text = "\n".join(p.read_text(encoding="utf-8")
                     for p in [root / "convert_hf_to_gguf.py",
                               *sorted((root / "conversion").glob("*.py"))])
    found = _CHKTXT.search(text)
    if found is None:
        raise RuntimeUnavailable(f"{root}: no chktxt in llama.cpp's converter")
    probe = ast.literal_eval(found.group(1))
    return probe, dict(_HASH.findall(text))


def tokenizer_pre(model_dir: Path, cache_dir: Path | None = None) -> str | None:
    """llama.cpp's ``tokenizer.ggml.pre`` for the tokenizer in ``model_dir`` (the name its
    converter would write), or None when the converter does not recognize it."""
    from transformers import AutoTokenizer

    probe, table = pre_tokenizer_table(cache_dir)
    ids = AutoTokenizer.from_pretrained(model_dir).encode(probe)
    return table.get(hashlib.sha256(str(ids).encode()).hexdigest())
