"""The four verdicts of a parity test (the model QA playbooks' outcomes), beside pytest's own.

pytest says passed / failed / skipped / xfailed / xpassed (:class:`Outcome`, the record's
``outcome``); a parity test also says what the engine did (:class:`Verdict`, the record's
``verdict``):

* **Corroborated**: the check ran and the engine's output survived it;
* **Falsified**: the engine answered, and the answer is wrong (a failed verdict, NaN/Inf
  logits, garbage or unparseable output);
* **Timeout**: the engine ran past its timeout and was killed;
* **Crashed**: the engine died, refused its command line, or the test could not reach a
  verdict for another reason (the error says which).

A skipped test has no verdict (it did not run), nor has a test stopped by its cache
(``CacheUnusable``: a full disk, a read-only folder missing an entry): the engine was
not at fault, and the error names the folder. A known falsification (a strict xfail
from the baseline) is still Falsified, and a baseline entry that passes (XPASS) is
Corroborated: the verdict is about the engine, pytest's status about the run.

Both are ``str`` enums whose values are the strings the JSON results, the ticket, JUnit's
``groundtruth_outcome`` property and the HTML report have always shown: a member compares,
hashes, formats and serializes (``json``) as its value. Whatever crosses a process boundary
(xdist's execnet, which serializes only exact built-in types) carries ``.value``, and the
receiving side rebuilds the member (``ParityRecord.to_json``/``from_json``).
"""

from __future__ import annotations

import enum

from pytest_groundtruth.core.failures import CacheUnusable, EngineFailure, FailureKind


class _Text(str, enum.Enum):
    """A ``str`` enum that prints as its value (``enum.StrEnum`` from Python 3.11, which
    the package's 3.10 floor does not have)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Verdict(_Text):
    """What the engine did in a parity test (the record's ``verdict``)."""

    CORROBORATED = "Corroborated"
    FALSIFIED = "Falsified"
    TIMEOUT = "Timeout"
    CRASHED = "Crashed"


class Outcome(_Text):
    """pytest's status of a parity test, xfail and XPASS told apart (the record's
    ``outcome``)."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"

    @property
    def failed(self) -> bool:
        """The test fails the run (a failure, or a strict XPASS of a baseline entry)."""
        return self in (Outcome.FAILED, Outcome.XPASSED)


# Engine failure kinds -> verdict; the rest are crashes.
BY_FAULT = {
    FailureKind.TIMEOUT: Verdict.TIMEOUT,
    FailureKind.NAN: Verdict.FALSIFIED,
    FailureKind.GARBAGE: Verdict.FALSIFIED,
}


def of_fault(fault: str) -> Verdict:
    """The verdict of a test reached through an engine failure of kind ``fault`` (a
    :class:`FailureKind` value; ``""``: an ordinary wrong answer)."""
    if not fault:
        return Verdict.FALSIFIED
    try:
        kind = FailureKind(fault)
    except ValueError:
        return Verdict.CRASHED
    return BY_FAULT.get(kind, Verdict.CRASHED)


def of_exception(exc: BaseException) -> Verdict | None:
    """The verdict of a test that raised ``exc`` instead of returning one (None: none,
    the cache stopped it)."""
    if isinstance(exc, CacheUnusable):
        return None
    if isinstance(exc, EngineFailure):
        return of_fault(exc.kind.value)
    return Verdict.CRASHED
