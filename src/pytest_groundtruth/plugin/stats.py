"""What one pytest process did, for ``groundtruth bench``: engine work and peak memory.

With ``GROUNDTRUTH_STATS=FILE`` in the environment, every pytest process (the
controller and each xdist worker) appends one JSON line to FILE when it ends: runners
opened, results made, artifacts built, the largest model it loaded, its peak resident
memory and which engine libraries it imported. A warm re-run is expected to show zero
runners, results and builds, and no torch. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_groundtruth.context import Context

ENV = "GROUNDTRUTH_STATS"
ENGINE_MODULES = ("torch", "transformers", "torchao", "llama_cpp")


@dataclass(frozen=True)
class ProcessStats:
    pid: int
    worker: str  # the xdist worker id, or "main"
    runners_opened: int
    results_made: int
    artifacts_built: int
    largest_model_bytes: int
    peak_rss_bytes: int
    imported: tuple[str, ...]  # engine libraries this process imported

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessStats:
        return cls(**{**data, "imported": tuple(data.get("imported") or ())})


def peak_rss_bytes(status: Path = Path("/proc/self/status")) -> int:
    """This process's peak resident memory. Linux: ``VmHWM``, the high-water mark of this
    program's own memory; ``getrusage``'s ``ru_maxrss`` would also count the parent's
    memory at ``fork()`` (a pytest started by a process that held a model would report
    that model). Elsewhere ``ru_maxrss``."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def process_stats(contexts: Iterable[Context], worker: str = "main") -> ProcessStats:
    contexts = list(contexts)
    return ProcessStats(
        pid=os.getpid(),
        worker=worker,
        runners_opened=sum(c.engines.runners_opened for c in contexts),
        results_made=sum(c.results.store.made for c in contexts),
        artifacts_built=sum(c.engines.artifacts.built for c in contexts),
        largest_model_bytes=max((c.engines.largest_model_bytes for c in contexts), default=0),
        peak_rss_bytes=peak_rss_bytes(),
        imported=tuple(m for m in ENGINE_MODULES if m in sys.modules),
    )


def write_process_stats(contexts: Iterable[Context], worker: str = "main") -> None:
    """Append this process's line to ``$GROUNDTRUTH_STATS`` (when set). ``worker``: the
    xdist worker id, or ``"main"`` for the controller or a run without workers."""
    target = os.environ.get(ENV)
    if not target:
        return
    line = json.dumps(asdict(process_stats(contexts, worker))) + "\n"
    # One short O_APPEND write per process: lines from concurrent workers do not interleave.
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_process_stats(path: Path) -> list[ProcessStats]:
    if not path.is_file():
        return []
    return [ProcessStats.from_json(json.loads(line))
            for line in path.read_text().splitlines() if line.strip()]
