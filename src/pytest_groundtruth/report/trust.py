"""Which verdicts the score trusts: each suite's measured false alarms per precision.

``groundtruth falsify`` runs every suite on correct files (our conversions, llama.cpp's
converter and quantizer, the published file) and writes, with ``--trust FILE``, the
quantizations at which each suite failed one of them (``data/trust.json``, never typed
by hand). A suite that failed a correct file at a precision cannot tell a broken
conversion from a good one there: its tests there *inform* (they are shown, with their
verdicts) but do not lower the qualification score (:mod:`~.score`). Precisions are
compared by GGUF type, so the original workflow's ``int8``/``int4`` are ``q8_0``/``q4_0``
whichever runtime made the file. A suite or precision the falsification did not measure
counts as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_groundtruth.ggufio.quants import precision

TRUST_FILE = Path(__file__).parents[1] / "data" / "trust.json"
SCHEMA = "pytest-groundtruth/trust/1"


@dataclass(frozen=True)
class Trust:
    """Per suite, the precisions (or ``high+low`` pairs) at which it failed a correct file."""

    false_alarms: Mapping[str, frozenset[str]] = field(default_factory=dict)
    measured: frozenset[str] = frozenset()  # the precisions the correct files covered
    source: str = ""  # what measured it, for reports
    suites: frozenset[str] = frozenset()  # the suites the falsification ran

    def informs_only(self, suite: str, quant: str, other: str | None = None) -> bool:
        """True when ``suite`` raised a false alarm at this precision (or pair)."""
        key = precision(quant) if other is None else f"{precision(quant)}+{precision(other)}"
        return key in self.false_alarms.get(suite, frozenset())

    def to_json(self) -> str:
        return json.dumps({
            "schema": SCHEMA,
            "generated_by": "groundtruth falsify --trust",
            "source": self.source,
            "measured": sorted(self.measured),
            "suites": sorted(self.suites),
            "false_alarms": {s: sorted(q) for s, q in sorted(self.false_alarms.items())},
        }, indent=2) + "\n"


def from_alarms(alarms: Mapping[str, Sequence[str]], measured: Sequence[str],
                source: str, suites: Sequence[str] = ()) -> Trust:
    """The trust facts of a falsification: ``alarms`` maps a suite to the quantizations
    (``a+b`` for pairs) where it failed a correct file."""
    def key(q: str) -> str:
        return "+".join(precision(p) for p in q.split("+"))

    return Trust({s: frozenset(key(q) for q in qs) for s, qs in alarms.items() if qs},
                 frozenset(key(q) for q in measured), source, frozenset(suites))


def load(path: Path = TRUST_FILE) -> Trust:
    """The trust facts in ``path`` (none when it does not exist: every suite counts)."""
    if not path.is_file():
        return Trust()
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {data.get('schema')!r} is not {SCHEMA!r}; "
                         "regenerate it with `groundtruth falsify --trust`")
    return Trust({s: frozenset(q) for s, q in data.get("false_alarms", {}).items()},
                 frozenset(data.get("measured", ())), str(data.get("source", "")),
                 frozenset(data.get("suites", ())))
