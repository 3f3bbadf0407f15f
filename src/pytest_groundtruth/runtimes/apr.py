"""The apr runtime: aprender's ``apr`` CLI (``cargo install apr-cli``), driven as a subprocess.

The runner speaks apr-cli's current command line (aprender; `apr --help` of the release),
:data:`APR_CLI`::

    apr import <hf://ID | file> --quantize int8|int4|fp16 -o <out>.apr
    apr export <file>.apr --format gguf -o <out>.gguf
    apr run <file> -p <prompt> -n 32 --temperature 0 --top-k 1 --json
    apr eval <file> --json --text <text>
    apr inspect <file> --json
    apr --version

Every call is an argv list (never a shell), has a timeout (the process group is killed
when it runs out), runs with ``NO_COLOR=1``, and has its stdout stripped of ANSI escape
codes before the JSON object is looked for (log lines may come before or after it).
Failures are :class:`~pytest_groundtruth.runtimes.base.EngineFailure` s carrying the exact
command line (``shlex.join``) and stderr: a refused flag is ``REFUSED`` (with a hint about
older releases' spelling), any other non-zero exit ``CRASHED``, a timeout ``TIMEOUT``,
output without the expected JSON or with non-integer token ids ``GARBAGE``, a NaN/Inf
(or JSON ``null``, serde's spelling of NaN) perplexity ``NAN``.

Import source: ``hf://<repo>`` when the roster source is ``hf:<repo>`` without a pinned
revision (apr fetches it itself, as the original workflow did); otherwise the local
float32 ``model.safetensors`` of the resolved model directory (the very bytes the
oracle loads; config.json and the tokenizer lie beside it), or the directory for
sharded weights. A GGUF-sourced roster entry (the embedded SmolLM2) is imported from
its dequantized safetensors too, so every apr artifact starts from the oracle's
weights; apr's own GGUF importer is exercised by :meth:`AprRuntime.reimport`.

apr writes each artifact to a staging file with the right suffix (``model.apr``,
``model.gguf``) in a private directory beside the caller's ``out``, which is then
renamed to exactly ``out``: apr never sees the cache's ``.partial`` names.

apr's JSON has no log-probabilities and no prompt token ids: no TOPK or SCORE
capability, and :attr:`Generation.prompt_tokens` is empty. ``stop_reason`` is ``"eos"``
when the last token is an EOS id of the model or fewer than ``max_new_tokens`` came back,
else ``"length"``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.runtimes.base import (
    Artifact,
    Capability,
    Generation,
    PerplexityResult,
    Runner,
    Runtime,
    read_options,
)

if TYPE_CHECKING:
    from pytest_groundtruth.models.sources import ResolvedModel

#: The apr command line this runner speaks (apr-cli's current flags).
APR_CLI = (
    "apr-cli current flags: `run FILE -p PROMPT -n N --temperature 0 --top-k 1 --json`, "
    "`eval FILE --json --text TEXT`, `import SRC --quantize int8|int4|fp16 -o OUT.apr`, "
    "`export FILE --format gguf -o OUT.gguf`, `inspect FILE --json`"
)
OLD_CLI_HINT = (
    "this runner speaks the current apr-cli flags (" + APR_CLI + "); older apr releases used "
    "`apr run <file> <prompt> -n 32 -f json`: upgrade with `cargo install apr-cli` "
    "(or point apr_bin / --gt-apr-bin at a current build)"
)
INSTALL_HINT = "install it with `cargo install apr-cli` or set apr_bin / --gt-apr-bin"

#: Our quantization names -> apr's ``--quantize`` values.
APR_QUANT = {"int8": "int8", "int4": "int4", "float16": "fp16"}

RUN_KEYS = ("tokens", "text")
EVAL_KEYS = ("perplexity",)

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks), two-byte
# escapes, and the 8-bit CSI introducer.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[@-Z\\-_]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
# How clap, argparse and other parsers say that a flag or value is not accepted.
_REFUSED = re.compile(
    r"unexpected argument|unrecognized (?:argument|option|subcommand)|unrecognised"
    r"|unknown (?:argument|option|flag)|no such (?:option|flag)"
    r"|found argument .* which wasn't expected|invalid value .* for|invalid choice"
    r"|required arguments were not provided|the following arguments are required",
    re.IGNORECASE,
)
_KILL_GRACE = 5.0  # seconds to collect output after killing a timed-out process group


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences."""
    return _ANSI.sub("", text)


def find_json_object(text: str, required: Sequence[str] = ()) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (ANSI codes stripped) that has all ``required`` keys.

    Log lines may come before or after it and may contain braces of their own.
    """
    clean = strip_ansi(text)
    decoder = json.JSONDecoder()
    start = clean.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(clean, start)
        except ValueError:
            start = clean.find("{", start + 1)
            continue
        if isinstance(obj, dict) and all(key in obj for key in required):
            return obj
        start = clean.find("{", end)  # another object: look after it, not inside it
    return None


@dataclass(frozen=True)
class Completed:
    """One finished apr call."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def call(self) -> str:
        return shlex.join(self.argv)


def is_refusal(stderr: str) -> bool:
    """Whether ``stderr`` says that the command line was not accepted."""
    return bool(_REFUSED.search(strip_ansi(stderr)))


def _excerpt(text: str, limit: int = 200) -> str:
    return repr(text[:limit]) + (" ..." if len(text) > limit else "")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if sys.platform == "win32":  # pragma: no cover - the project runs on POSIX
        proc.kill()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: its pgid is its pid


def invoke(argv: Sequence[str], timeout: float) -> Completed:
    """Run ``argv`` (no shell) with ``NO_COLOR=1`` under ``timeout`` seconds.

    Raises ``EngineFailure(TIMEOUT)`` (after killing the whole process group) when it
    runs out, :class:`RuntimeUnavailable` when the executable cannot be started.
    """
    argv = tuple(argv)
    call = shlex.join(argv)
    env = {**os.environ, "NO_COLOR": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise RuntimeUnavailable(f"cannot start {argv[0]!r} ({exc}): {INSTALL_HINT}") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=_KILL_GRACE)
        except subprocess.TimeoutExpired:  # a grandchild in its own session holds the pipes
            proc.kill()
            out, err = b"", b""
        raise EngineFailure(
            FailureKind.TIMEOUT,
            f"apr did not finish within {timeout:g} s (its process group was killed)",
            call=call,
            stderr=strip_ansi(err.decode("utf-8", "replace")),
        ) from None
    except BaseException:  # KeyboardInterrupt and friends: leave no orphan behind
        _kill_group(proc)
        proc.wait()
        raise
    return Completed(
        argv=argv,
        returncode=proc.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        seconds=time.perf_counter() - start,
    )


def fault_of(kind: FailureKind, message: str, done: Completed) -> EngineFailure:
    """A fault of ``kind`` carrying ``done``'s command line and (ANSI-stripped) stderr."""
    return EngineFailure(kind, message, call=done.call, stderr=strip_ansi(done.stderr))


def exit_fault(done: Completed) -> EngineFailure:
    """The fault for a non-zero exit: REFUSED for a rejected command line, else CRASHED."""
    if is_refusal(done.stderr):
        return fault_of(
            FailureKind.REFUSED,
            f"apr refused the command line (exit status {done.returncode}); {OLD_CLI_HINT}",
            done,
        )
    if done.returncode < 0:
        try:
            signame = f" ({signal.Signals(-done.returncode).name})"
        except ValueError:
            signame = ""
        what = f"was killed by signal {-done.returncode}{signame}"
    else:
        what = f"exited with status {done.returncode}"
    return fault_of(FailureKind.CRASHED, f"apr {what}", done)


def parse_json(done: Completed, required: Sequence[str]) -> dict[str, Any]:
    """The JSON object with ``required`` keys on ``done``'s stdout, else GARBAGE."""
    obj = find_json_object(done.stdout, required)
    if obj is None:
        raise fault_of(
            FailureKind.GARBAGE,
            f"apr printed no JSON object with keys {', '.join(required)}; stdout begins "
            f"{_excerpt(strip_ansi(done.stdout))}",
            done,
        )
    return obj


def token_ids(value: object, done: Completed, vocab: int | None = None) -> tuple[int, ...]:
    """Validate apr's ``tokens``: a list of non-negative integers below ``vocab``."""
    if not isinstance(value, list):
        raise fault_of(
            FailureKind.GARBAGE, f"apr's 'tokens' is not a list: {_excerpt(repr(value))}", done
        )
    for position, token in enumerate(value):
        if isinstance(token, bool) or not isinstance(token, int):
            raise fault_of(
                FailureKind.GARBAGE,
                f"apr's token #{position} is {token!r}, not an integer id "
                f"(tokens begin {_excerpt(repr(value), 120)})",
                done,
            )
        if token < 0 or (vocab is not None and token >= vocab):
            raise fault_of(
                FailureKind.GARBAGE,
                f"apr's token #{position} is {token}, outside the vocabulary [0, {vocab})",
                done,
            )
    return tuple(value)


def _finite_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def parse_generation(
    done: Completed, max_new_tokens: int, eos: Sequence[int], vocab: int | None = None
) -> Generation:
    """A :class:`Generation` from ``apr run --json`` output."""
    data = parse_json(done, RUN_KEYS)
    tokens = token_ids(data["tokens"], done, vocab)
    text = data["text"]
    if not isinstance(text, str):
        raise fault_of(
            FailureKind.GARBAGE, f"apr's 'text' is not a string: {_excerpt(repr(text))}", done
        )
    if len(tokens) > max_new_tokens:
        raise fault_of(
            FailureKind.GARBAGE, f"apr returned {len(tokens)} tokens for -n {max_new_tokens}", done
        )
    millis = _finite_number(data.get("inference_time_ms"))
    seconds = millis / 1000.0 if millis is not None and millis > 0 else done.seconds
    stopped_early = len(tokens) < max_new_tokens
    return Generation(
        tokens=tokens,
        text=text,
        prompt_tokens=(),  # apr's JSON does not report the prompt's token ids
        stop_reason="eos" if (tokens and tokens[-1] in eos) or stopped_early else "length",
        seconds=seconds,
        call=done.call,
    )


def parse_perplexity(done: Completed) -> PerplexityResult:
    """A :class:`PerplexityResult` from ``apr eval --json`` output."""
    data = parse_json(done, EVAL_KEYS)
    raw = data["perplexity"]
    if raw is None or (isinstance(raw, float) and not math.isfinite(raw)):
        spelled = "null (serde_json's spelling of NaN/Inf)" if raw is None else repr(raw)
        raise fault_of(FailureKind.NAN, f"apr eval reported perplexity {spelled}", done)
    ppl = _finite_number(raw)
    if ppl is None or ppl < 1.0:
        raise fault_of(
            FailureKind.GARBAGE, f"apr eval reported perplexity {raw!r} (must be a number >= 1)",
            done,
        )
    raw_nll = data.get("cross_entropy")
    if isinstance(raw_nll, float) and not math.isfinite(raw_nll):
        raise fault_of(FailureKind.NAN, f"apr eval reported cross_entropy {raw_nll!r}", done)
    nll = _finite_number(raw_nll)
    count = data.get("tokens_evaluated")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise fault_of(FailureKind.GARBAGE, f"apr eval reported tokens_evaluated {count!r}", done)
    secs = _finite_number(data.get("eval_time_secs"))
    return PerplexityResult(
        perplexity=ppl,
        cross_entropy=nll if nll is not None else math.log(ppl),
        tokens_evaluated=count,
        seconds=secs if secs is not None else done.seconds,
        call=done.call,
    )


def model_eos_ids(model_dir: Path) -> tuple[int, ...]:
    """EOS ids from generation_config.json, then config.json (as the oracle reads them)."""
    for name in ("generation_config.json", "config.json"):
        try:
            data = json.loads((model_dir / name).read_text())
        except (OSError, ValueError):
            continue
        value = data.get("eos_token_id") if isinstance(data, dict) else None
        if isinstance(value, int):
            return (value,)
        if isinstance(value, list):
            return tuple(v for v in value if isinstance(v, int))
    return ()


@contextlib.contextmanager
def staged(out: Path, name: str) -> Iterator[Path]:
    """A path ``<private dir beside out>/<name>`` that becomes exactly ``out`` on success."""
    out.parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=".apr-stage-", dir=out.parent))
    try:
        target = directory / name
        yield target
        if not target.is_file():
            raise EngineFailure(FailureKind.GARBAGE, f"apr exited 0 but did not write {target}")
        target.replace(out)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class AprRuntime(Runtime):
    name = "apr"
    quantizations: tuple[str, ...] = tuple(APR_QUANT)
    capabilities: frozenset[Capability] = frozenset(
        {Capability.GENERATE, Capability.PERPLEXITY, Capability.EXPORT_GGUF, Capability.REIMPORT}
    )

    def __init__(self, apr_bin: str = "apr", timeout: float = 300.0) -> None:
        self.apr_bin = apr_bin
        self.timeout = timeout
        self._version: str | None = None

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], settings: Settings,
                    device: str = "cpu") -> Runtime:
        """Options: ``bin`` (default: ``apr_bin``), ``timeout`` (default: ``timeout``)."""
        values = read_options(name, options, {"bin": str, "timeout": (int, float)})
        runtime = cls(apr_bin=values.get("bin", settings.apr_bin),
                      timeout=float(values.get("timeout", settings.timeout)))
        runtime.name = name
        return runtime

    # -- the binary

    def executable(self) -> str | None:
        return shutil.which(self.apr_bin)

    def unavailable(self) -> str | None:
        if self.executable() is None:
            looked = "" if self.apr_bin == "apr" else f" (looked for {self.apr_bin!r})"
            return f"apr not found on PATH{looked}: {INSTALL_HINT}"
        return None

    def _argv(self, *args: str) -> list[str]:
        exe = self.executable()
        if exe is None:
            raise RuntimeUnavailable(self.unavailable() or INSTALL_HINT)
        return [exe, *args]

    def call(self, *args: str, check: bool = True) -> Completed:
        """Run ``apr ARGS``; with ``check`` a non-zero exit raises its fault."""
        done = invoke(self._argv(*args), self.timeout)
        if check and done.returncode != 0:
            raise exit_fault(done)
        return done

    def version(self) -> str:
        if self._version is None:
            done = self.call("--version")
            lines = strip_ansi(done.stdout).strip().splitlines()
            if not lines:
                raise fault_of(FailureKind.GARBAGE, "`apr --version` printed nothing", done)
            self._version = lines[0].strip()
        return self._version

    def key_parts(self, quant: str) -> dict[str, str]:
        return {**super().key_parts(quant), "apr_quantize": APR_QUANT[quant]}

    # -- artifacts

    def artifact_suffix(self, quant: str) -> str:
        return ".apr"

    def import_source(self, model: ResolvedModel) -> str:
        """What ``apr import`` reads for ``model`` (see the module docstring)."""
        if model.spec.scheme == "hf" and model.spec.revision is None:
            return f"hf://{model.spec.location}"
        weights = model.path / "model.safetensors"
        return str(weights if weights.is_file() else model.path)

    def _import(self, source: str, quant: str, out: Path) -> str:
        with staged(out, "model.apr") as target:
            done = self.call("import", source, "--quantize", APR_QUANT[quant], "-o", str(target))
            call = done.call
        return call

    def build(self, model: ResolvedModel, quant: str, out: Path) -> str:
        self.check_quant(quant)
        call = self._import(self.import_source(model), quant, out)
        self._check_inspect(out, model)
        return call

    def reimport(self, gguf: Path, model: ResolvedModel, quant: str, out: Path) -> str:
        self.check_quant(quant)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".apr-src-", dir=out.parent) as tmp:
            source = gguf
            if gguf.suffix != ".gguf":  # apr picks the importer by extension
                source = Path(tmp) / "source.gguf"
                source.symlink_to(gguf.resolve())
            call = self._import(str(source), quant, out)
        self._check_inspect(out, model)
        return call

    def inspect(self, path: Path) -> dict[str, Any]:
        """``apr inspect <file> --json``."""
        with staged_name(path, ".apr") as named:
            done = self.call("inspect", str(named), "--json")
        return parse_json(done, ("architecture",))

    def _check_inspect(self, path: Path, model: ResolvedModel) -> None:
        """apr must read back what it wrote, with the roster's layer count."""
        info = self.inspect(path)
        layers = info.get("num_layers")
        if isinstance(layers, int) and not isinstance(layers, bool) and layers != model.spec.layers:
            raise EngineFailure(
                FailureKind.GARBAGE,
                f"apr inspect reports {layers} layers in {path.name}; the roster says "
                f"{model.spec.layers} for {model.slug!r}",
            )

    def validate(self, artifact_path: Path) -> str | None:
        if not artifact_path.is_file():
            return f"{artifact_path} is not a file"
        if artifact_path.stat().st_size == 0:
            return f"{artifact_path} is empty"
        return None

    def open(self, artifact: Artifact, model: ResolvedModel) -> AprRunner:
        reason = self.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        problem = self.validate(artifact.path)
        if problem:
            raise FileNotFoundError(problem)
        return AprRunner(self, artifact, model_eos_ids(model.path), model.spec.vocab)


def _option(flag: str, value: str) -> tuple[str, ...]:
    """``flag value``, or ``flag=value`` when the value starts with a dash (which argument
    parsers would otherwise take for a flag)."""
    return (f"{flag}={value}",) if value.startswith("-") else (flag, value)


@contextlib.contextmanager
def staged_name(path: Path, suffix: str) -> Iterator[Path]:
    """``path`` itself when it ends in ``suffix``, else a symlink to it that does
    (apr chooses a file's reader by its extension; the cache's temporaries end in .partial).
    The link goes in the system's temporary folder: ``path`` may be a user's file in a
    folder that is read-only, or not ours to write in."""
    if path.suffix == suffix:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="gt-apr-name-") as tmp:
        link = Path(tmp) / f"model{suffix}"
        link.symlink_to(path.resolve())
        yield link


class AprRunner(Runner):
    """An .apr artifact; every call is one ``apr`` process (apr has no server mode here)."""

    def __init__(
        self, runtime: AprRuntime, artifact: Artifact, eos: Sequence[int], vocab: int | None
    ) -> None:
        super().__init__(artifact)
        self.runtime = runtime
        self.eos = tuple(eos)
        self.vocab = vocab

    def generate(self, prompt: str, max_new_tokens: int, top_k: int = 0) -> Generation:
        if top_k:
            raise NotImplementedError("apr run --json reports no log-probabilities (no top-k)")
        with staged_name(self.artifact.path, ".apr") as path:
            done = self.runtime.call(
                "run", str(path), *_option("-p", prompt), "-n", str(max_new_tokens),
                "--temperature", "0", "--top-k", "1", "--json",
            )
        return parse_generation(done, max_new_tokens, self.eos, self.vocab)

    def perplexity(self, text: str) -> PerplexityResult:
        with staged_name(self.artifact.path, ".apr") as path:
            # No --threshold: apr exits non-zero when the perplexity is over its default
            # one; with valid JSON that says passed=false, that exit is not a crash.
            done = self.runtime.call("eval", str(path), "--json", *_option("--text", text),
                                     check=False)
        if done.returncode != 0:
            data = find_json_object(done.stdout, EVAL_KEYS)
            if data is None or data.get("passed") is not False:
                raise exit_fault(done)
        return parse_perplexity(done)

    def export_gguf(self, out: Path) -> str:
        with staged_name(self.artifact.path, ".apr") as path, staged(out, "model.gguf") as target:
            done = self.runtime.call("export", str(path), "--format", "gguf", "-o", str(target))
        return done.call
