"""What one pytest process did, for ``groundtruth bench``: engine work and peak memory.

With ``GROUNDTRUTH_STATS=FILE`` in the environment, every pytest process (the
controller and each xdist worker) appends one JSON line to FILE when it ends: runners
opened, results made, artifacts built, the largest model it loaded, its peak resident
memory (and each test's: :class:`PhaseMeter`) and which engine libraries it imported.
A warm re-run is expected to show zero runners, results and builds, and no torch.
Without the variable nothing is written.
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
    # Each test's peaks (:class:`PhaseMeter`), in the order run; empty where not measured.
    phases: tuple[PhasePeak, ...] = ()
    peak_anon_bytes: int = 0  # the sampled peak of anonymous memory (0: not sampled)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessStats:
        phases = tuple(PhasePeak(**p) if isinstance(p, dict) else PhasePeak(*p)
                       for p in data.get("phases") or ())
        return cls(**{**data, "imported": tuple(data.get("imported") or ()),
                      "phases": phases})


@dataclass(frozen=True)
class PhasePeak:
    """One test's peak memory: resident (the kernel's high-water mark, reset when the test
    began, so what the process held then counts too) and anonymous (sampled: the memory
    the kernel cannot drop; the rest of the resident memory is mapped files, the GGUF and
    safetensors weights, which it can reclaim and read again)."""

    test: str  # the node id
    rss_bytes: int
    anon_bytes: int


STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
SAMPLE_SECONDS = 0.005


def _status_kib(field: str, status: Path = STATUS) -> int | None:
    try:
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class PhaseMeter:
    """Peak memory per test (Linux). Before each test the resident high-water mark
    (``VmHWM``) is reset (``5`` to ``/proc/self/clear_refs``) and read after it; a daemon
    thread samples ``RssAnon`` every 5 ms for the anonymous peak (the kernel keeps no
    high-water mark of it; a spike shorter than the interval can be missed, loading a
    tensor or filling a logits buffer takes longer). ``tracemalloc`` would not see the
    engines' C allocations. Where the files are missing nothing is measured."""

    def __init__(self) -> None:
        import threading

        self.phases: list[PhasePeak] = []
        self.peak_rss = 0  # over the whole process, across the resets
        self.peak_anon = 0
        self._anon = 0  # the current test's sampled peak
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.enabled = _status_kib("RssAnon") is not None and CLEAR_REFS.exists()
        if self.enabled:
            threading.Thread(target=self._sample, name="gt-phase-meter", daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            anon = _status_kib("RssAnon") or 0
            with self._lock:
                self._anon = max(self._anon, anon)
                self.peak_anon = max(self.peak_anon, anon)

    def begin(self) -> None:
        if not self.enabled:
            return
        self.peak_rss = max(self.peak_rss, peak_rss_bytes())
        try:
            CLEAR_REFS.write_text("5")
        except OSError:
            self.enabled = False
            return
        with self._lock:
            self._anon = _status_kib("RssAnon") or 0

    def end(self, test: str) -> None:
        if not self.enabled:
            return
        rss = peak_rss_bytes()
        anon = _status_kib("RssAnon") or 0
        with self._lock:
            self._anon = max(self._anon, anon)
            self.peak_anon = max(self.peak_anon, anon)
            self.phases.append(PhasePeak(test, rss, self._anon))
        self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> None:
        self._stop.set()


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


def process_stats(contexts: Iterable[Context], worker: str = "main",
                  meter: PhaseMeter | None = None) -> ProcessStats:
    contexts = list(contexts)
    peak = peak_rss_bytes()
    if meter is not None:
        meter.stop()
        peak = max(peak, meter.peak_rss)
    return ProcessStats(
        pid=os.getpid(),
        worker=worker,
        runners_opened=sum(c.engines.runners_opened for c in contexts),
        results_made=sum(c.results.store.made for c in contexts),
        artifacts_built=sum(c.engines.artifacts.built for c in contexts),
        largest_model_bytes=max((c.engines.largest_model_bytes for c in contexts), default=0),
        peak_rss_bytes=peak,
        imported=tuple(m for m in ENGINE_MODULES if m in sys.modules),
        phases=tuple(meter.phases) if meter is not None else (),
        peak_anon_bytes=meter.peak_anon if meter is not None else 0,
    )


def phase_meter() -> PhaseMeter | None:
    """A running :class:`PhaseMeter` when ``$GROUNDTRUTH_STATS`` is set, else None."""
    return PhaseMeter() if os.environ.get(ENV) else None


def write_process_stats(contexts: Iterable[Context], worker: str = "main",
                        meter: PhaseMeter | None = None) -> None:
    """Append this process's line to ``$GROUNDTRUTH_STATS`` (when set). ``worker``: the
    xdist worker id, or ``"main"`` for the controller or a run without workers;
    ``meter``: the process's per-test peaks."""
    target = os.environ.get(ENV)
    if not target:
        return
    line = json.dumps(asdict(process_stats(contexts, worker, meter))) + "\n"
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
