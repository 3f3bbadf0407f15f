"""The memory budget: how much memory one process may hold, and how much it holds now.

``max_memory`` (``[tool.groundtruth]``, ``--gt-max-memory``) is the memory a whole run
may use; each pytest process (each xdist worker) gets an equal share of it
(:func:`process_budget`). Without it the run may use what the machine has, less a
margin for the operating system and the page cache (:func:`default_memory`): the
smaller of the physical memory (``/proc/meminfo``'s ``MemTotal``, ``os.sysconf``
elsewhere) and every cgroup limit of this process (v2 ``memory.max``, v1
``memory.limit_in_bytes``), because in a container the kernel kills a process at the
cgroup's limit whatever the machine has.

What the budget decides (docs/memory.md): whether a float32 reference is loaded whole
or layer by layer with accelerate's disk offload, and whether torchao's dequantized
float32 copy of its int4 weights is kept. Both compare the bytes a step would add with
the budget less what the process holds now (:func:`rss_bytes`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MIB = 2**20
GIB = 2**30
# Left to the operating system, other processes and the page cache that reading weights
# fills: a tenth of the memory, at least 1 GiB.
MARGIN_FRACTION = 0.1
MARGIN_MIN = GIB
MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def format_size(size: int) -> str:
    """``1.50 GiB`` / ``512 MiB``: how sizes are shown to the user."""
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / MIB:.0f} MiB"


def physical_memory(meminfo: Path = MEMINFO) -> int | None:
    """The machine's memory: ``MemTotal`` of /proc/meminfo, else ``os.sysconf``."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _limit(text: str) -> int | None:
    """A cgroup limit file's value; None for ``max`` or v1's "no limit" (near 2^63)."""
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < 2**62 else None


def cgroup_limits(proc_cgroup: Path = Path("/proc/self/cgroup"),
                  root: Path = CGROUP_ROOT) -> list[int]:
    """Every memory limit that applies to this process: its cgroup's and each parent's
    (v2 ``memory.max``; v1 ``memory.limit_in_bytes`` of the memory controller), and the
    mount root's (a container sees its own cgroup as the root)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    places: list[tuple[Path, str]] = [(root, "memory.max"), (root / "memory",
                                                              "memory.limit_in_bytes")]
    for line in lines:
        _, controllers, path = ([*line.split(":", 2), "", ""])[:3]
        rel = path.strip("/")
        if controllers == "":  # v2: the unified hierarchy
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        parts = Path(rel).parts if rel else ()
        for depth in range(len(parts), 0, -1):
            places.append((base.joinpath(*parts[:depth]), name))
    limits = []
    for folder, name in places:
        try:
            value = _limit((folder / name).read_text())
        except OSError:
            continue
        if value is not None:
            limits.append(value)
    return limits


def machine_memory() -> int:
    """What this process may use at most: the smaller of the physical memory and every
    cgroup limit (8 GiB when neither can be read)."""
    found = [m for m in (physical_memory(), *cgroup_limits()) if m]
    return min(found) if found else 8 * GIB


def default_memory(machine: int | None = None) -> int:
    """The run's budget when none is set: the machine's memory less the margin."""
    machine = machine_memory() if machine is None else machine
    return max(machine - max(int(machine * MARGIN_FRACTION), MARGIN_MIN), machine // 2)


def process_budget(max_memory: int | None, workers: int = 1) -> int:
    """One process's share of ``max_memory`` (default: :func:`default_memory`) among
    ``workers`` processes (pytest-xdist workers)."""
    total = default_memory() if max_memory is None else max_memory
    return total // max(1, workers)


WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".apr")


def weights_bytes(path: Path) -> int:
    """Size of a model's weights on disk: the file, or a directory's weight files."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.iterdir()
               if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


@dataclass(frozen=True)
class LoadPlan:
    """How a model is loaded under a budget: whole, or with ``in_memory`` bytes of its
    weights in memory and the rest read from disk layer by layer (accelerate's offload)."""

    weights: int  # bytes the model's weights take in memory, loaded whole
    room: int  # bytes the budget leaves for them (budget - held now - working memory)
    budget: int

    @property
    def offload(self) -> bool:
        return self.weights > self.room

    @property
    def in_memory(self) -> int:
        """What accelerate may keep in memory (``max_memory={"cpu": ...}``)."""
        return max(0, min(self.weights, self.room))

    def describe(self) -> str:
        how = (f"offloaded: {format_size(self.in_memory)} in memory, the rest read from "
               "disk layer by layer" if self.offload else "loaded whole")
        return (f"{format_size(self.weights)} of weights, {format_size(max(self.room, 0))} "
                f"free in a {format_size(self.budget)} budget: {how}")


def load_plan(weights: int, budget: int, working: int, held: int | None = None) -> LoadPlan:
    """The plan for ``weights`` bytes of weights, given the process's ``budget``, the
    ``working`` memory a forward pass needs beside them (activations, logits) and what
    the process ``held`` already (default: its resident memory now)."""
    held = rss_bytes() if held is None else held
    return LoadPlan(weights, budget - held - working, budget)


def _status_field(key: str, status: Path = Path("/proc/self/status")) -> int | None:
    try:
        for line in status.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> int:
    """This process's resident memory now (``VmRSS``; 0 where /proc is missing)."""
    return _status_field("VmRSS") or 0


def peak_bytes() -> int:
    """This process's peak resident memory (``VmHWM``; 0 where /proc is missing)."""
    return _status_field("VmHWM") or 0


def reset_peak() -> bool:
    """Reset this process's peak resident memory (``VmHWM``) to its current value, so a
    later peak is the peak of what ran since (Linux: ``echo 5 > /proc/self/clear_refs``).
    False where that cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
