"""The known-failure baseline: falsifications a team has accepted, as a ratchet on values.

A plain text file, one test per line, sorted, so it reads and diffs well::

    # pytest-groundtruth baseline: known falsifications (strict xfail).
    # <test id>  <measured value>  <worse: higher|lower>  <tolerance>
    token[smollm2-135m-llamacpp-int8-code]        7              higher  0
    ppl[smollm2-135m-torchao-int4]                23.85          higher  1%
    agreement[smollm2-135m-torchao-int4]          kl=0.38,top1=0.59  kl:higher,top1:lower  1%

A listed test that fails no worse than its recorded value (within the tolerance) is an
xfail; one that passes is XPASS(strict) and fails the run until the baseline is updated
(``--gt-baseline-update`` rewrites the lines of the tests the run ran from its parity
failures, and keeps the lines of the tests it did not run). A listed
test that fails *worse* than recorded beyond its tolerance fails, naming both values
(pytest-benchmark's ``--benchmark-compare-fail``): 7 mismatches yesterday and 25 today
is a new falsification, not the known one. The direction that is worse comes from the
suite's declaration (:attr:`Suite.worse`); the tolerance is absolute, or relative with
``%``, and may be edited in the file. A value of another kind than recorded (a number
then, a prompt-token failure now) also fails, as a changed falsification.

Two-column lines (``<test id> <measured value>``, the format before values were
compared) still load: such an entry excuses any parity failure of its test, as before,
and the xfail reason says to rewrite the file to compare values. Only parity verdicts
are excused: an engine crash, a timeout or a corrupt oracle still fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.core.atomic import atomic_write_text

HEADER = """\
# pytest-groundtruth baseline: known falsifications (strict xfail).
# Rewrite with `pytest --gt-baseline FILE --gt-baseline-update`.
# <test id>  <measured value>  <worse: higher|lower>  <tolerance: absolute, or N%>
"""
DIRECTIONS = ("higher", "lower")
Worse = str | Mapping[str, str]  # one direction, or one per key of a measured mapping
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class BaselineError(ValueError):
    """The baseline file is malformed; names the file and line."""


@dataclass(frozen=True)
class BaselineEntry:
    value: str  # the measured value as written
    worse: str | None = None  # "higher", "lower", "key:dir,key:dir"; None: not compared
    tolerance: str = "0"  # absolute ("0.5") or relative ("1%")

    def __str__(self) -> str:
        return self.value


def _check_tolerance(text: str) -> None:
    if not _NUMBER.match(text.removesuffix("%")) or float(text.removesuffix("%")) < 0:
        raise ValueError(f"tolerance {text!r} is not a non-negative number or percentage")


def _check_worse(text: str) -> None:
    parts = text.split(",")
    for part in parts:
        direction = part.rpartition(":")[2] if ":" in part else part
        if direction not in DIRECTIONS or (len(parts) > 1 and ":" not in part):
            raise ValueError(f"direction {text!r} is not 'higher', 'lower' or "
                             "'key:higher,key:lower,...'")


def load_baseline(path: Path) -> dict[str, BaselineEntry]:
    """test id -> the recorded entry."""
    entries: dict[str, BaselineEntry] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(
            f"baseline {path} does not exist: create it with --gt-baseline-update"
        ) from None
    except UnicodeDecodeError as exc:
        at = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise BaselineError(f"{path}:{at}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:  # a directory, unreadable
        raise BaselineError(f"baseline {path} cannot be read ({exc.strerror or exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = "" if line.lstrip().startswith("#") else line.strip()
        if not stripped:
            continue
        parts = stripped.split()
        if len(parts) not in (2, 4) or "[" not in parts[0] or not parts[0].endswith("]"):
            raise BaselineError(
                f"{path}:{number}: expected '<suite>[<id>] <measured value> "
                f"[<higher|lower> <tolerance>]', got {line!r}"
            )
        if parts[0] in entries:
            raise BaselineError(f"{path}:{number}: {parts[0]} is listed twice")
        if len(parts) == 2:
            entries[parts[0]] = BaselineEntry(parts[1])
            continue
        try:
            _check_worse(parts[2])
            _check_tolerance(parts[3])
        except ValueError as exc:
            raise BaselineError(f"{path}:{number}: {exc}") from None
        entries[parts[0]] = BaselineEntry(parts[1], parts[2], parts[3])
    return entries


# --------------------------------------------------------------------------- values


def format_measured(value: object) -> str:
    """A measured value as one word: numbers to 4 significant digits, mappings as
    ``key=value,...`` (sorted), None as ``-``."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={format_measured(v)}" for k, v in sorted(value.items()))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace(" ", "_") if value is not None else "-"


def format_worse(worse: Worse, value: object) -> str:
    """The direction column for ``value`` under the suite's declaration ``worse``."""
    if isinstance(value, Mapping):
        if isinstance(worse, str):
            return ",".join(f"{k}:{worse}" for k in sorted(value))
        return ",".join(f"{k}:{worse.get(k, 'higher')}" for k in sorted(value))
    return worse if isinstance(worse, str) else "higher"


def default_tolerance(value: object) -> str:
    """Counts must not grow at all; measured floats may move 1 % (float kernels and
    rounding to 4 digits across machines)."""
    numbers = list(value.values()) if isinstance(value, Mapping) else [value]
    return "1%" if any(isinstance(v, float) for v in numbers) else "0"


def entry_for(value: object, worse: Worse) -> BaselineEntry:
    """The entry ``--gt-baseline-update`` writes for a measured ``value``."""
    return BaselineEntry(format_measured(value), format_worse(worse, value),
                         default_tolerance(value))


def _number(text: str) -> float | None:
    if text == "-":
        return math.inf  # no rank (outside the top-k): the worst a "higher" value can be
    return float(text) if _NUMBER.match(text) else None


def _split(text: str) -> dict[str, str]:
    if "=" not in text:
        return {"": text}
    return dict(part.split("=", 1) for part in text.split(","))


def _directions(worse: str) -> dict[str, str]:
    if ":" not in worse:
        return {"": worse}
    return dict(part.rsplit(":", 1) for part in worse.split(","))


def _allowed(recorded: float, tolerance: str) -> float:
    if tolerance.endswith("%"):
        return abs(recorded) * float(tolerance[:-1]) / 100
    return float(tolerance)


def regression(entry: BaselineEntry, measured: object) -> str | None:
    """Why ``measured`` is worse than the recorded ``entry`` beyond its tolerance (naming
    both values), or None when it is not (or the entry records no direction)."""
    if entry.worse is None:
        return None
    now = format_measured(measured)
    recorded, current = _split(entry.value), _split(now)
    directions = _directions(entry.worse)
    if set(recorded) != set(current):
        return (f"measured {now}, recorded {entry.value}: another kind of value than the "
                "baseline's (a different falsification)")
    for key, old_text in recorded.items():
        old, new = _number(old_text), _number(current[key])
        direction = directions.get(key, "higher")
        if old is None or new is None:
            if old_text != current[key]:
                return (f"measured {now}, recorded {entry.value}: the value changed and "
                        "cannot be compared")
            continue
        if math.isinf(old) and math.isinf(new):
            continue
        change = new - old if direction == "higher" else old - new
        if change > _allowed(old, entry.tolerance) + 1e-12:
            label = f"{key} " if key else ""
            return (f"worse than the baseline: {label}measured {current[key]}, recorded "
                    f"{old_text} ({direction} is worse, tolerance {entry.tolerance})")
    return None


def kept_entries(path: Path) -> dict[str, BaselineEntry]:
    """The entries ``--gt-baseline-update`` starts from: the file's, where it exists and
    loads (a run over some tests rewrites their lines and keeps the others); none for a
    missing or malformed file, which the update replaces."""
    try:
        return load_baseline(path)
    except BaselineError:
        return {}


def write_baseline(path: Path, entries: Mapping[str, BaselineEntry]) -> None:
    rows = sorted(entries.items())
    width = max((len(k) for k, _ in rows), default=0) + 2
    value_width = max((len(e.value) for _, e in rows), default=0) + 2
    worse_width = max((len(e.worse or "") for _, e in rows), default=0) + 2
    body = "".join(
        f"{k:<{width}}{e.value}\n" if e.worse is None
        else f"{k:<{width}}{e.value:<{value_width}}{e.worse:<{worse_width}}{e.tolerance}\n"
        for k, e in rows
    )
    atomic_write_text(path, HEADER + body)
