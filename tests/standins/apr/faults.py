"""Fault injection for the apr stand-in: ``APR_STANDIN_FAULT`` makes it misbehave on purpose.

A comma-separated list of ``FAULT`` or ``COMMAND:FAULT`` items (``run:nan``); an unscoped
fault applies to every subcommand but not to ``--version`` (scope it as
``version:FAULT`` for that). Faults:

``ansi``          colour codes around and inside the JSON (jq -C style) and a coloured log line
``noisy``         log lines with braces on stdout before and after the JSON
``garbage``       non-JSON text on stdout, exit 0
``crash``         a Rust panic message on stderr, exit 101
``hang``          sleep forever (with a child process that holds the pipes open)
``nan``           eval reports a NaN perplexity; run reports the text "NaN"
``bad-tokens``    run reports non-integer token ids
``refuse-flags``  run rejects ``--temperature``/``--top-k`` like a build without them
``old-cli``       the older command line: ``apr run FILE PROMPT -n 32 -f json`` works,
                  ``-p`` and ``--json`` are rejected (clap's "unexpected argument")
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from pytest_groundtruth.core import process

FAULT_ENV = "APR_STANDIN_FAULT"
FAULTS = (
    "ansi", "noisy", "garbage", "crash", "hang", "nan", "bad-tokens", "refuse-flags", "old-cli",
)


class StandinError(Exception):
    """A user error: printed as ``error: ...`` on stderr, exit 1 (as apr does)."""


def active_faults(command: str) -> set[str]:
    """The faults ``APR_STANDIN_FAULT`` turns on for ``command``."""
    active = set()
    for item in os.environ.get(FAULT_ENV, "").split(","):
        item = item.strip()
        if not item:
            continue
        scope, _, fault = item.rpartition(":")
        if fault not in FAULTS:
            raise StandinError(
                f"{FAULT_ENV}: unknown fault {fault!r} (known: {', '.join(FAULTS)})"
            )
        if scope == command or (not scope and command != "version"):
            active.add(fault)
    return active


def clap_refusal(flag: str, usage: str) -> int:
    """What clap prints for an argument it does not know; its exit status."""
    sys.stderr.write(
        f"error: unexpected argument '{flag}' found\n\n"
        f"  tip: to pass '{flag}' as a value, use '-- {flag}'\n\n"
        f"Usage: {usage}\n\nFor more information, try '--help'.\n"
    )
    return 2


def crash(command: str) -> int:
    """A Rust panic on stderr; its exit status."""
    sys.stderr.write(
        f"thread 'main' panicked at crates/apr-cli/src/commands/{command}.rs:212:38:\n"
        "called `Option::unwrap()` on a `None` value\n"
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
        f"(pytest-groundtruth apr stand-in: injected by {FAULT_ENV}=crash)\n"
    )
    sys.stderr.flush()
    return 101


def hang() -> int:
    """Never return, with a child process that holds stdout and stderr open."""
    print("Loading model...", flush=True)
    # Killing only the parent would leave the caller waiting for EOF on the pipes; the
    # runner must kill the process group.
    helper = process.spawn([sys.executable, "-c", "import time; time.sleep(3600)"],
                           own_group=False)
    sys.stderr.write(f"apr stand-in: hanging ({FAULT_ENV}=hang), helper pid {helper.pid}\n")
    sys.stderr.flush()
    while True:
        time.sleep(3600)


def garbage() -> int:
    print("apr: \x01\x02 generated \ufffd\ufffd tokens; kv=[0x7f3a...] ok ok ok ok ok")
    return 0


def colour_json(payload: dict[str, Any]) -> str:
    """JSON with jq -C style colour codes between (never inside) the tokens."""
    text = json.dumps(payload, indent=2)
    decoder = json.JSONDecoder()
    out = ["\x1b[1;39m"]
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            _value, end = decoder.raw_decode(text, i)
            colour = "\x1b[34;1m" if text[end:end + 1] == ":" else "\x1b[0;32m"
            out.append(f"\x1b[0m{colour}{text[i:end]}\x1b[0m\x1b[1;39m")
            i = end
        elif ch in "{}[]:,":
            out.append(f"\x1b[1;39m{ch}\x1b[0m")
            i += 1
        else:
            out.append(ch)
            i += 1
    out.append("\x1b[0m")
    return "".join(out)


def emit_json(payload: dict[str, Any], faults: set[str]) -> None:
    """Print ``payload`` as JSON on stdout, dressed as the active faults say."""
    if "noisy" in faults:
        print("[apr] loading tensors {layers: 2, dtype: f32} ... done")
        print("[apr] kv-cache {capacity: 512}")
    if "ansi" in faults:
        print("\x1b[32m✓\x1b[0m \x1b[1mModel loaded\x1b[0m")
        print(colour_json(payload))
    else:
        print(json.dumps(payload, indent=2))
    if "noisy" in faults:
        print("[apr] done {exit: 0}")
    sys.stdout.flush()
