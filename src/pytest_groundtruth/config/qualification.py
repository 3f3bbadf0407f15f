"""What a run must meet beyond each test's verdict: a minimum grade, performance floors.

Declared once here, read by the configuration (``min_grade``, ``min_throughput``,
``max_p99_ms`` in ``[tool.groundtruth]`` or a ``groundtruth.toml``), the ``--gt-*``
options and the reports:

* grades of the qualification score (0-1000): 950+ A+, 900+ A, 850+ B+, 800+ B, 700+ C,
  else F (docs/qualification.md);
* performance thresholds per runtime: a number for every runtime, or a table keyed by
  runtime name (``"*"`` for the others), e.g. ``min_throughput = {llamacpp = 50}``.

Parsing raises :class:`ValueError` with the offending value; the configuration loader
adds the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

GRADES: tuple[tuple[str, int], ...] = (
    ("A+", 950), ("A", 900), ("B+", 850), ("B", 800), ("C", 700), ("F", 0),
)
GRADE_NAMES = tuple(name for name, _ in GRADES)
ANY_RUNTIME = "*"
THRESHOLD_KEYS = ("min_throughput", "max_p99_ms")


def grade_of(score: int) -> str:
    """The letter for a score 0-1000."""
    return next(name for name, floor in GRADES if score >= floor)


def grade_floor(grade: str) -> int:
    """The lowest score that earns ``grade``."""
    for name, floor in GRADES:
        if name == grade:
            return floor
    raise ValueError(f"grade {grade!r} is not one of {', '.join(GRADE_NAMES)}")


def positive(value: Any, what: str) -> float:
    """A positive, finite number (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} = {value!r} must be a number")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} = {value!r} must be a positive, finite number")
    return float(value)


def threshold_table(value: Any, key: str) -> dict[str, float]:
    """A config value: one number (every runtime) or a table runtime -> number."""
    if isinstance(value, Mapping):
        return {str(name): positive(v, f"{key}.{name}") for name, v in value.items()}
    return {ANY_RUNTIME: positive(value, key)}


def parse_threshold(text: str, option: str) -> tuple[str, float]:
    """An option value ``[RUNTIME=]NUMBER``."""
    name, sep, number = text.rpartition("=")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected [RUNTIME=]NUMBER") from None
    return (name if sep else ANY_RUNTIME) or ANY_RUNTIME, positive(value, f"{option} {text!r}")


def threshold_for(table: Mapping[str, float], runtime: str) -> float | None:
    """The runtime's own threshold, else the one for every runtime, else None."""
    return table.get(runtime, table.get(ANY_RUNTIME))
