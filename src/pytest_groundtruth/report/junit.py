"""JUnit XML of the parity tests, written from their records (``groundtruth merge``).

Laid out as pytest's own ``--junitxml`` (xunit2) lays out the same tests, so CI systems
show a merged sharded run like one run: a ``testcase`` per test with pytest's
``classname`` and ``name`` (:func:`test_address`), ``time`` from the record, a
``failure`` or a ``skipped`` element (``type`` ``pytest.skip`` or ``pytest.xfail``) with
the record's reason as its message, and the ``groundtruth_outcome`` property
(Corroborated, Falsified, Timeout, Crashed) that the plugin records on each test. What a
record cannot give back: the traceback text inside ``failure`` (the message is the
error's first line; the ticket and the HTML have the explanation), the distinction
between a failure and a setup ``error`` (both are ``failure`` here), and the tests
outside the parity matrix (their shards' own ``--junitxml`` files have them).
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from pytest_groundtruth.core.atomic import atomic_write_bytes
from pytest_groundtruth.report.outcomes import Outcome
from pytest_groundtruth.report.records import ParityRecord, Run

PROPERTY = "groundtruth_outcome"  # the user property the plugin records (plugin/session.py)


def test_address(nodeid: str) -> tuple[str, str]:
    """pytest's ``(classname, name)`` of a node id (``_pytest.junitxml.mangle_test_address``)."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def kind_of(record: ParityRecord) -> tuple[str, str] | None:
    """The child element (tag, type) a record's outcome gets, None for a pass."""
    if record.failed:
        return "failure", ""
    if record.outcome is Outcome.SKIPPED:
        return "skipped", "pytest.skip"
    if record.outcome is Outcome.XFAILED:
        return "skipped", "pytest.xfail"
    return None


def render(run: Run, records: Sequence[ParityRecord] | None = None) -> bytes:
    records = sorted(run.records if records is None else records, key=lambda r: r.nodeid)
    suites = ET.Element("testsuites", name="pytest tests")
    counts = {"failure": 0, "skipped": 0}
    cases = []
    for record in records:
        classname, name = test_address(record.nodeid)
        case = ET.Element("testcase", classname=classname, name=name,
                          time=f"{record.duration:.3f}")
        if record.verdict is not None:
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name=PROPERTY, value=record.verdict.value)
        kind = kind_of(record)
        if kind is not None:
            tag, type_ = kind
            counts[tag] += 1
            child = ET.SubElement(case, tag, message=record.reason)
            if type_:
                child.set("type", type_)
        cases.append(case)
    finished = run.finished or run.started
    suite = ET.SubElement(
        suites, "testsuite", name="pytest", errors="0", failures=str(counts["failure"]),
        skipped=str(counts["skipped"]), tests=str(len(records)),
        time=f"{(finished - run.started).total_seconds():.3f}",
        timestamp=run.started.isoformat(), hostname=socket.gethostname())
    suite.extend(cases)
    body: bytes = ET.tostring(suites, encoding="utf-8")
    return b'<?xml version="1.0" encoding="utf-8"?>' + body


def write(path: Path, run: Run) -> None:
    atomic_write_bytes(path, render(run))
