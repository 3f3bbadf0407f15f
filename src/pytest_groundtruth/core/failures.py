"""How an engine failed, beyond a wrong answer: the kinds, and the exception that carries one.

Pure data: raised by runtimes and by the numeric helpers (a NaN logit), caught by the
plugin, which turns each kind into a test outcome.
"""

from __future__ import annotations

import enum


class FailureKind(enum.Enum):
    """How a runtime failed, beyond a wrong answer (the QA playbook's outcomes)."""

    CRASHED = "crashed"
    TIMEOUT = "timeout"
    GARBAGE = "garbage output"
    NAN = "NaN/Inf"
    REFUSED = "refused the command line"


class EngineFailure(Exception):
    """The engine itself failed; carries the exact call and what it printed."""

    def __init__(self, kind: FailureKind, message: str, call: str = "", stderr: str = "") -> None:
        self.kind = kind
        self.call = call
        self.stderr = stderr
        super().__init__(message)

    def __str__(self) -> str:
        text = f"[{self.kind.value}] {self.args[0]}"
        if self.call:
            text += f"\n  call: {self.call}"
        if self.stderr.strip():
            text += "\n  stderr:\n    " + "\n    ".join(self.stderr.strip().splitlines()[-20:])
        return text


class RuntimeUnavailable(Exception):
    """The runtime cannot run here (not installed, no GPU); the message says how to fix it."""


class InputError(Exception):
    """Something the user supplied cannot be used: a file, a model, a prompt, a setting.

    The message names it and says how to fix it; the plugin reports it as a short error
    (no traceback) and ``groundtruth`` as one line with its own exit status.
    """


class CacheUnusable(OSError):
    """The cache folder cannot hold what a test needs: its disk is full, or it is read-only
    and the entry is missing. Neither the engine's fault nor the converter's: the message
    names the folder, the disk and what to do, and the test errors without a verdict."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message
