"""``--gt-results FILE``: every parity test's measurement as one JSON document.

The document is complete enough to rebuild the run's records (:func:`read`): each result
carries its whole case (``case_fields``), so ``groundtruth merge`` turns the documents of
several shards into the records one run would have had, and every report is written
again from them. ``durations`` holds every test's seconds (setup + call + teardown), the
tests outside the parity matrix too, less the time the test spent resolving a model's
float32 directory (the first test to need a model pays it, and so does every shard for
itself): ``--gt-shard-timings`` reads it to balance shards.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.report.provenance import oracle_provenance, tool_versions
from pytest_groundtruth.report.records import ParityRecord, Run
from pytest_groundtruth.report.score import qualify

SCHEMA = "pytest-groundtruth/results/1"
# What two runs of the same tests may differ in without testing anything differently
# (:func:`comparable` leaves these out):
# - when and how long: the document's ``started``, ``finished`` and ``durations``, each
#   result's ``duration``, and every speed measured on the way (a key of a result's
#   ``details``, at any depth, named ``seconds`` or ending in ``_seconds``, ``_ms`` or
#   ``per_second``); the ``perf`` suite's results, which measure only the machine;
# - where the local cache is: paths into it (``.../artifacts/...``, ``.../models/...``,
#   ``.../other-tools/...``) read ``<cache>/artifacts/...``: each machine (each shard) has
#   its own, and an artifact fetched from ``cache_url`` says where it was built.
TIMING_FIELDS = ("started", "finished", "durations")
RESULT_TIMING_FIELDS = ("duration",)
TIMING_SUITES = ("perf",)
# Thread counts in a call (llama.cpp's n_threads): a process's share of the machine, like a
# timing, which sharded runs (one CPU each) and one run (all of them) divide differently.
THREADS = re.compile(r"\b(n_threads(?:_batch)?)=\d+")
# a path into the local cache, by the cache's top folders (store/entries.py)
CACHE_PATH = re.compile(
    r"""(?:[A-Za-z]:)?/[^\s'"<>]*?/(artifacts|models|other-tools|llama\.cpp|results|faults)/""")
# a duration inside a text ("artifact.gguf opened in 0.20 s", a gateway gate's detail)
SECONDS_TEXT = re.compile(r"(?<![\w.])\d+(?:\.\d+)? s\b")


class ResultsError(ValueError):
    """The file is not a pytest-groundtruth results document (names the file)."""


def document(run: Run) -> dict[str, Any]:
    finished = run.finished or dt.datetime.now(dt.timezone.utc)
    # By node id, not in the order the tests finished: one run with or without workers,
    # and the merged shards of a run, write the same document.
    records = sorted(run.records, key=lambda r: r.nodeid)
    return {
        "schema": SCHEMA,
        "started": run.started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "versions": tool_versions(run.records),
        "oracles": oracle_provenance(run.records),
        "results": [r.to_json(transport=True) for r in records],
        # score and grade per model x runtime x quantization (docs/qualification.md)
        "qualification": [q.to_json() for q in qualify(records)],
        "durations": dict(sorted(run.durations.items())),
    }


def write(path: Path, run: Run) -> None:
    atomic_write_text(path, json.dumps(document(run), indent=2, ensure_ascii=False,
                                       default=str) + "\n")


def load(path: Path) -> dict[str, Any]:
    """The document at ``path``, checked to be a results document."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read the results ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not a pytest-groundtruth results file (schema "
                           f"{SCHEMA!r}); write one with pytest --gt-results FILE")
    return data


def read(path: Path) -> Run:
    """The run a results document describes: its records, times and durations."""
    data = load(path)
    records = []
    for i, entry in enumerate(data.get("results") or []):
        try:
            records.append(ParityRecord.from_json(entry))
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultsError(f"{path}: results[{i}] cannot be read back ({exc!r}); it was "
                               "written by an older version: rerun with --gt-results"
                               ) from None
    durations = data.get("durations") or {}
    if not isinstance(durations, dict):
        raise ResultsError(f"{path}: 'durations' is not an object")
    return Run(started=_time(path, data, "started"), records=records,
               finished=_time(path, data, "finished"),
               durations={str(k): float(v) for k, v in durations.items()})


def _time(path: Path, data: dict[str, Any], key: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(data[key]))
    except (KeyError, ValueError):
        raise ResultsError(f"{path}: field {key!r} is not an ISO date and time") from None


def durations(path: Path) -> dict[str, float]:
    """Node id -> seconds of every test in the document at ``path``: its ``durations``,
    else (a document from before them) each parity result's ``duration``."""
    data = load(path)
    out: dict[str, float] = {}
    for entry in data.get("results") or []:
        if isinstance(entry, dict) and isinstance(entry.get("duration"), (int, float)):
            out[str(entry.get("nodeid"))] = float(entry["duration"])
    found = data.get("durations") or {}
    if not isinstance(found, dict):
        raise ResultsError(f"{path}: 'durations' is not an object")
    out.update({str(k): float(v) for k, v in found.items() if isinstance(v, (int, float))})
    return out


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A results document without what differs between two runs of the same tests
    (the comment above :data:`TIMING_FIELDS`): one run and the merged shards of a run
    give equal ones."""
    out = {k: v for k, v in data.items() if k not in TIMING_FIELDS}
    results = []
    for entry in data.get("results", []):
        entry = {k: v for k, v in entry.items() if k not in RESULT_TIMING_FIELDS}
        result = entry.get("result")
        if isinstance(result, dict):
            if entry.get("case", {}).get("suite") in TIMING_SUITES:
                result = None
            else:
                result = {**result, "details": _untimed(result.get("details", {}))}
            entry["result"] = result
        results.append(entry)
    out["results"] = results
    text = CACHE_PATH.sub(lambda m: f"<cache>/{m.group(1)}/", json.dumps(out, sort_keys=True))
    text = THREADS.sub(r"\1=<threads>", text)
    text = SECONDS_TEXT.sub("<seconds> s", text)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _timing_key(key: str) -> bool:
    return key == "seconds" or key.endswith(("_seconds", "_ms", "per_second"))


def _untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not _timing_key(str(k))}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value
