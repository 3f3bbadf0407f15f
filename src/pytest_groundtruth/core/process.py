"""The subprocess harness: every child process of the package starts here (the
architecture test keeps ``subprocess`` imported in this module alone).

:func:`invoke` runs an argument list (never a shell) with ``NO_COLOR=1`` under a timeout;
:func:`spawn` starts one in the background (a server, a helper) and :func:`stop` ends it
with its whole process group.
Its failures are :class:`~pytest_groundtruth.core.failures.EngineFailure` s that carry
the exact command line (``shlex.join``), the exit status and the tool's stderr tail:

* the executable does not exist: :class:`RuntimeUnavailable` (the only case that means
  "not installed": the tests skip with the install hint);
* the operating system refuses to start it (``E2BIG``: the command line is over the
  argument limit, ~128 KiB per argument on Linux; ``EACCES``, ``ENOEXEC``): ``REFUSED``
  with the real reason, never "not installed";
* it runs past the timeout: its whole process group is killed (children that hold the
  pipes die with it), and on Linux every descendant too, found through ``/proc`` before
  the kill (a grandchild that called ``setsid()`` has left the group), as is any process
  still holding its output pipes (a daemon whose parent already exited); ``TIMEOUT``.
  A daemon that detached and closed the pipes before the timeout is out of reach (a
  cgroup would be needed);
* a non-zero exit: :func:`exit_failure`, ``REFUSED`` when stderr says a flag or value was
  not accepted (clap, argparse and friends), else ``CRASHED`` (with the signal's name when
  it was killed by one).

Output is read with :func:`find_json_object` (ANSI escape codes stripped, log lines before
or after the object allowed, braces in log lines tolerated). stderr in a failure is cut
to its last :data:`STDERR_LINES` lines and :data:`STDERR_CHARS` characters (:func:`tail`):
one enormous line from an engine never travels whole into reports.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable

STDERR_LINES = 40
STDERR_CHARS = 4000
EXCERPT_CHARS = 200
KILL_GRACE = 5.0  # seconds to collect output after killing a timed-out process group
Child: TypeAlias = "subprocess.Popen[bytes]"  # a process started by :func:`spawn`

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


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences."""
    return _ANSI.sub("", text)


def tail(text: str, lines: int = STDERR_LINES, chars: int = STDERR_CHARS) -> str:
    """The end of ``text``: its last ``lines`` lines, then at most ``chars`` characters
    of those (a note says how much was cut)."""
    kept = text.splitlines()[-lines:]
    cut_lines = len(text.splitlines()) - len(kept)
    out = "\n".join(kept)
    cut_chars = max(0, len(out) - chars)
    if cut_chars:
        out = out[-chars:]
    if cut_lines or cut_chars:
        what = [f"{cut_lines} line(s)"] if cut_lines else []
        what += [f"{cut_chars} character(s)"] if cut_chars else []
        out = f"[... {' and '.join(what)} cut]\n{out}"
    return out


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of the start of ``text`` (with `...` when it goes on)."""
    return repr(text[:limit]) + (" ..." if len(text) > limit else "")


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


def is_refusal(stderr: str) -> bool:
    """Whether ``stderr`` says that the command line was not accepted."""
    return bool(_REFUSED.search(strip_ansi(stderr)))


@dataclass(frozen=True)
class Completed:
    """One finished program run."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def call(self) -> str:
        return shlex.join(self.argv)


def failure(kind: FailureKind, message: str, done: Completed) -> EngineFailure:
    """A failure of ``kind`` carrying ``done``'s command line and stderr tail."""
    return EngineFailure(kind, message, call=done.call, stderr=tail(strip_ansi(done.stderr)))


def exit_failure(done: Completed, tool: str, refused_hint: str = "") -> EngineFailure:
    """The failure for a non-zero exit: ``REFUSED`` for a rejected command line (with
    ``refused_hint``), else ``CRASHED``."""
    if is_refusal(done.stderr):
        hint = f"; {refused_hint}" if refused_hint else ""
        return failure(FailureKind.REFUSED,
                       f"{tool} refused the command line (exit status {done.returncode}){hint}",
                       done)
    if done.returncode < 0:
        try:
            signame = f" ({signal.Signals(-done.returncode).name})"
        except ValueError:
            signame = ""
        what = f"was killed by signal {-done.returncode}{signame}"
    else:
        what = f"exited with status {done.returncode}"
    return failure(FailureKind.CRASHED, f"{tool} {what}", done)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc``, every process of its group (it was started in a new session) and
    every descendant that left the group (``setsid``), where ``/proc`` lists them."""
    if sys.platform == "win32":  # pragma: no cover - the project runs on POSIX
        proc.kill()
        return
    strays = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: its pgid is its pid
    _kill(strays)


def _kill(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process ``/proc`` shows (empty where there is none)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "(comm)": state, ppid, ...
        if len(fields) > 1 and fields[1].isdigit():
            found[int(entry.name)] = int(fields[1])
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo and len(out) < 10_000:
        child = todo.pop(0)
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def pipe_holders(*files: Any) -> list[int]:
    """The processes (other than this one) holding an end of the pipes behind ``files``."""
    inodes = set()
    for file in files:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            inodes.add(f"pipe:[{os.fstat(file.fileno()).st_ino}]")
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        if not inodes or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any(str(fd.readlink()) in inodes for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
    return found


def _start_failure(argv: tuple[str, ...], exc: OSError, tool: str, install_hint: str
                   ) -> Exception:
    call = shlex.join(argv)
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        hint = f": {install_hint}" if install_hint else ""
        return RuntimeUnavailable(f"cannot start {argv[0]!r}: no such executable{hint}")
    if exc.errno == errno.E2BIG:
        size = sum(len(a.encode("utf-8", "surrogateescape")) + 1 for a in argv)
        longest = max(len(a.encode("utf-8", "surrogateescape")) for a in argv)
        return EngineFailure(
            FailureKind.REFUSED,
            f"the operating system refused to start {tool}: the command line is {size} bytes "
            f"(its longest argument {longest} bytes), over the argument limit ({exc.strerror}, "
            "E2BIG); pass long inputs in a file (e.g. {prompt_file} instead of {prompt})",
            call=call if len(call) <= STDERR_CHARS else call[:STDERR_CHARS] + " ...",
        )
    return EngineFailure(FailureKind.REFUSED,
                         f"the operating system refused to start {tool}: {exc}", call=call)


def invoke(argv: Sequence[str], timeout: float | None, *, tool: str = "the tool",
           env: Mapping[str, str] | None = None, cwd: Path | None = None,
           install_hint: str = "", environ: Mapping[str, str] | None = None) -> Completed:
    """Run ``argv`` (no shell) with ``NO_COLOR=1`` under ``timeout`` seconds (None: no limit).

    ``tool`` names the program in messages; ``env`` adds variables to the environment,
    which is ``environ`` where given (a whole environment), else this process's.
    Raises :class:`RuntimeUnavailable` when the executable does not exist,
    ``EngineFailure(REFUSED)`` when the OS will not start it, ``EngineFailure(TIMEOUT)``
    (after killing the whole process group) when it runs out of time.
    """
    argv = tuple(argv)
    call = shlex.join(argv)
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**(os.environ if environ is None else environ), **(env or {}),
                 "NO_COLOR": "1"},
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise _start_failure(argv, exc, tool, install_hint) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        try:
            out, err = proc.communicate(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:  # a grandchild in its own session holds the pipes
            _kill(pipe_holders(proc.stdout, proc.stderr))
            proc.kill()
            try:
                out, err = proc.communicate(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                out, err = b"", b""
        raise EngineFailure(
            FailureKind.TIMEOUT,
            f"{tool} did not finish within {timeout or 0:g} s (its process group was killed)",
            call=call,
            stderr=tail(strip_ansi(err.decode("utf-8", "replace"))),
        ) from None
    except BaseException:  # KeyboardInterrupt and friends: leave no orphan behind
        kill_group(proc)
        proc.wait()
        raise
    return Completed(
        argv=argv,
        returncode=proc.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        seconds=time.perf_counter() - start,
    )


def spawn(argv: Sequence[str], *, log: IO[bytes] | None = None,
          environ: Mapping[str, str] | None = None, own_group: bool = True) -> Child:
    """Start ``argv`` (no shell, stdin closed) and return at once.

    stdout and stderr go to ``log`` (inherited when None); ``environ`` is the whole
    environment (None: this process's). ``own_group``: in a new session, so that
    :func:`stop` ends it with every process it started; False keeps it in the caller's
    group (a helper that must die with its parent's group).
    """
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT if log is not None else None,
                            env=None if environ is None else dict(environ),
                            start_new_session=own_group)


def stop(proc: Child, grace: float) -> None:
    """End ``proc`` (started by :func:`spawn` in its own group): SIGTERM to its group, then
    after ``grace`` seconds SIGKILL; waits until it is gone."""
    if proc.poll() is not None:
        return
    if sys.platform == "win32":  # pragma: no cover - the project runs on POSIX
        proc.terminate()
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
