"""The subprocess harness with real processes: what each way of failing comes back as.

Hostile programs (hang with a child holding the pipes, crash with a 10 MB stderr line,
colour codes around JSON, argument lists over the OS limit) are small Python programs
run as real subprocesses.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from pytest_groundtruth.core import process
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.core.process import (
    STDERR_CHARS,
    Completed,
    exit_failure,
    find_json_object,
    invoke,
    tail,
)

PY = sys.executable


def test_tail_caps_lines_and_characters() -> None:
    lines = "\n".join(f"line {i}" for i in range(100))
    assert tail(lines, lines=3) == "[... 97 line(s) cut]\nline 97\nline 98\nline 99"
    huge = "x" * 10_000_000
    capped = tail(f"first\n{huge}", lines=40, chars=100)
    assert capped == "[... 9999906 character(s) cut]\n" + "x" * 100
    assert tail("short") == "short"


def test_enormous_stderr_line_is_capped_in_every_failure() -> None:
    """Issue 11: one 10 MB stderr line was copied whole into every failure and report."""
    code = "import sys; sys.stderr.write('E' * 10_000_000 + '\\nthe last words\\n'); sys.exit(3)"
    done = invoke([PY, "-c", code], timeout=60)
    assert len(done.stderr) > 10_000_000
    failure = exit_failure(done, "the engine")
    assert failure.kind is FailureKind.CRASHED
    assert "exited with status 3" in str(failure)
    assert len(failure.stderr) < STDERR_CHARS + 100
    assert failure.stderr.endswith("the last words")
    assert "character(s) cut" in failure.stderr
    assert len(str(failure)) < STDERR_CHARS + 1000


def test_missing_executable_is_the_only_unavailable(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match="no such executable: install it"):
        invoke([str(tmp_path / "nope")], timeout=5, install_hint="install it")
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(EngineFailure) as info:
        invoke([str(plain)], timeout=5, tool="mytool")
    assert info.value.kind is FailureKind.REFUSED
    assert "operating system refused to start mytool" in str(info.value)


def test_argument_over_the_os_limit_is_refused_not_missing() -> None:
    """Issue 11, defect 3: E2BIG from a 200 KiB prompt was taken as 'apr is missing'."""
    with pytest.raises(EngineFailure) as info:
        invoke([PY, "-c", "pass", "p" * 200_000], timeout=5, tool="apr (generate step)")
    assert info.value.kind is FailureKind.REFUSED
    message = str(info.value)
    assert "E2BIG" in message
    assert "over the argument limit" in message
    assert "{prompt_file}" in message
    assert len(info.value.call) <= STDERR_CHARS + 10


@pytest.mark.slow
def test_timeout_kills_the_whole_process_group() -> None:
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print('child', child.pid, file=sys.stderr, flush=True)\n"
            "time.sleep(600)\n")
    start = time.perf_counter()
    with pytest.raises(EngineFailure) as info:
        invoke([PY, "-c", code], timeout=2.0, tool="the engine")
    assert time.perf_counter() - start < 10
    assert info.value.kind is FailureKind.TIMEOUT
    assert "did not finish within 2 s (its process group was killed)" in str(info.value)
    child = int(info.value.stderr.split("child")[1].split()[0])
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child {child} survived the timeout")


def test_signal_and_refusal() -> None:
    killed = invoke([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                    timeout=30)
    assert "was killed by signal 9 (SIGKILL)" in str(exit_failure(killed, "x"))
    refused = Completed(("t", "--frob"), 2, "", "error: unrecognized arguments: --frob", 0.1)
    failure = exit_failure(refused, "t", "it speaks --frobnicate")
    assert failure.kind is FailureKind.REFUSED
    assert str(failure).startswith("[refused the command line] t refused the command line "
                                   "(exit status 2); it speaks --frobnicate")


def test_json_is_found_among_colours_and_log_lines() -> None:
    code = ("print('\\x1b[32mloading {layers: 2}\\x1b[0m'); "
            "print('\\x1b[1;39m{\\x1b[0m\"tokens\": [1, 2]\\x1b[1;39m}\\x1b[0m'); "
            "print('done {ok}')")
    done = invoke([PY, "-c", code], timeout=30)
    assert "\x1b[" in done.stdout
    assert find_json_object(done.stdout, ("tokens",)) == {"tokens": [1, 2]}


def test_no_shell_ever() -> None:
    nasty = "a; rm -rf / $(echo hi) `id` 'q' \"dq\" | cat > x &"
    done = invoke([PY, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", nasty, "-n"],
                  timeout=30)
    assert json.loads(done.stdout) == [nasty, "-n"]
    assert process.strip_ansi("\x1b]8;;http://x\x07link\x1b]8;;\x07") == "link"
