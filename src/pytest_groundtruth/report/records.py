"""What a report consumes: one :class:`ParityRecord` per parity test, and the run around them.

The plugin builds a record on the process that ran the test (an xdist worker or the
only process), ships it with the test report as JSON, and the controller rebuilds it;
every report (terminal matrix, HTML, JSON results, ticket, baseline) reads records only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_groundtruth.report.outcomes import Outcome, Verdict
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult


@dataclass(frozen=True)
class SettingsSummary:
    """Where a record's configuration came from (shown in reports)."""

    sources: tuple[str, ...]
    oracle_dir: str
    eval_text: str
    min_grade: str = ""  # the lowest qualification grade this configuration accepts


@dataclass(frozen=True)
class ParityRecord:
    name: str
    nodeid: str
    case: Case
    result: SuiteResult | None  # None when the test skipped or errored before a verdict
    runtime_version: str
    reason: str  # the skip reason or the error's first line
    settings: SettingsSummary
    outcome: Outcome | None = None  # pytest's status (set by the controller)
    duration: float = 0.0
    failure: str = ""  # the engine failure kind (crashed, timeout, ...) when there was one
    verdict: Verdict | None = None  # what the engine did; None when there was no verdict

    def __post_init__(self) -> None:
        # A record rebuilt from plain data (``{**record.__dict__, "outcome": "skipped"}``)
        # holds the members all the same; "" is None, an unknown name a ValueError.
        for name, kind in (("outcome", Outcome), ("verdict", Verdict)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                object.__setattr__(self, name, kind(value) if value else None)

    @property
    def failed(self) -> bool:
        return self.outcome is not None and self.outcome.failed

    def to_json(self, transport: bool = False) -> dict[str, Any]:
        """The record as the JSON results show it; ``transport`` adds the whole case, for
        :meth:`from_json` on the xdist controller."""
        data: dict[str, Any] = {
            "name": self.name,
            "nodeid": self.nodeid,
            "case": {"suite": self.case.suite, "model": self.case.model,
                     "runtime": self.case.runtime, "quant": self.case.quant_label,
                     "prompt": self.case.prompt, "id": self.case.id},
            "result": self.result.to_dict() if self.result is not None else None,
            "runtime_version": self.runtime_version,
            "reason": self.reason,
            "settings": {**asdict(self.settings), "sources": list(self.settings.sources)},
            "outcome": self.outcome.value if self.outcome is not None else "",
            "verdict": self.verdict.value if self.verdict is not None else None,
            "duration": self.duration,
        }
        if self.failure:
            data["fault"] = self.failure
        if transport:
            data["case_fields"] = asdict(self.case)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParityRecord:
        result = data.get("result")
        settings = data["settings"]
        return cls(
            name=data["name"], nodeid=data["nodeid"], case=Case(**data["case_fields"]),
            result=SuiteResult.from_dict(result) if result else None,
            runtime_version=data["runtime_version"], reason=data["reason"],
            settings=SettingsSummary(tuple(settings["sources"]), settings["oracle_dir"],
                                     settings["eval_text"], settings.get("min_grade", "")),
            outcome=Outcome(data["outcome"]) if data.get("outcome") else None,
            duration=data.get("duration", 0.0), failure=data.get("fault", ""),
            verdict=Verdict(data["verdict"]) if data.get("verdict") else None,
        )


@dataclass
class Run:
    """The run the records belong to."""

    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    records: list[ParityRecord] = field(default_factory=list)
    finished: dt.datetime | None = None  # None: the run is going on (written as "now")
    # node id -> seconds (setup + call + teardown) of every test, parity or not
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> list[ParityRecord]:
        return [r for r in self.records if r.failed]
