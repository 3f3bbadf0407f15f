"""The four outcomes of a parity test (the model QA playbooks'), beside pytest's own.

pytest says passed / failed / skipped / xfailed / xpassed; a parity test also says what
the engine did:

* **Corroborated**: the check ran and the engine's output survived it;
* **Falsified**: the engine answered, and the answer is wrong (a failed verdict, NaN/Inf
  logits, garbage or unparseable output);
* **Timeout**: the engine ran past its timeout and was killed;
* **Crashed**: the engine died, refused its command line, or the test could not reach a
  verdict for another reason (the error says which).

A skipped test has no outcome (it did not run), nor has a test stopped by its cache
(``CacheUnusable``: a full disk, a read-only folder missing an entry): the engine was
not at fault, and the error names the folder. A known falsification (a strict xfail
from the baseline) is still Falsified, and a baseline entry that passes (XPASS) is
Corroborated: the outcome is about the engine, pytest's status about the run.
"""

from __future__ import annotations

from pytest_groundtruth.core.failures import CacheUnusable, EngineFailure, FailureKind

CORROBORATED = "Corroborated"
FALSIFIED = "Falsified"
TIMEOUT = "Timeout"
CRASHED = "Crashed"
OUTCOMES = (CORROBORATED, FALSIFIED, TIMEOUT, CRASHED)

# Engine failure kinds (FailureKind values) -> outcome; the rest are crashes.
BY_FAULT = {
    FailureKind.TIMEOUT.value: TIMEOUT,
    FailureKind.NAN.value: FALSIFIED,
    FailureKind.GARBAGE.value: FALSIFIED,
}


def of_fault(fault: str) -> str:
    """The outcome of a verdict reached through an engine failure of kind ``fault``
    (``""``: an ordinary wrong answer)."""
    return BY_FAULT.get(fault, CRASHED) if fault else FALSIFIED


def of_exception(exc: BaseException) -> str:
    """The outcome of a test that raised ``exc`` instead of returning a verdict (``""``:
    none, the cache stopped it)."""
    if isinstance(exc, CacheUnusable):
        return ""
    if isinstance(exc, EngineFailure):
        return of_fault(exc.kind.value)
    return CRASHED
