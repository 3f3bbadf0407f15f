"""The memory budget: sizes, the machine's memory and cgroup limits, the setting, the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_groundtruth.config.options import apply_overrides
from pytest_groundtruth.config.settings import (
    ConfigError,
    Settings,
    load_settings,
    memory_size,
)
from pytest_groundtruth.core import budget
from pytest_groundtruth.core.budget import GIB, MIB, load_plan


@pytest.mark.parametrize(("text", "size"), [
    ("12GiB", 12 * GIB), ("512M", 512 * MIB), ("8GB", 8 * GIB), ("4096", 4096), (2048, 2048),
])
def test_memory_sizes(text: str | int, size: int) -> None:
    assert memory_size(text, "max_memory") == size


@pytest.mark.parametrize("text", ["", "lots", "12 parsecs", "0", "-1G"])
def test_bad_memory_sizes_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ConfigError, match=r"max_memory: .*(not a size|positive)"):
        memory_size(text, "max_memory")


def test_physical_memory_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683772 kB\nMemFree:        21274532 kB\n")
    assert budget.physical_memory(meminfo) == 24683772 * 1024
    # unreadable: os.sysconf's answer (this machine's), never an error
    assert (budget.physical_memory(tmp_path / "missing") or 0) > 0


def cgroup_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_limits_of_the_group_and_its_parents(tmp_path: Path) -> None:
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/ci/job\n")
    root = cgroup_tree(tmp_path, {"memory.max": "max\n", "ci/memory.max": "8589934592\n",
                                  "ci/job/memory.max": "4294967296\n"})
    assert sorted(budget.cgroup_limits(proc, root)) == [4 * GIB, 8 * GIB]


def test_cgroup_v1_limit_and_no_limit(tmp_path: Path) -> None:
    proc = tmp_path / "proc-cgroup"
    proc.write_text("9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n")
    root = cgroup_tree(tmp_path, {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
        "memory/process_api/abc/memory.limit_in_bytes": "3221225472\n"})
    assert budget.cgroup_limits(proc, root) == [3 * GIB]


def test_default_leaves_a_margin_and_workers_share_it() -> None:
    assert budget.default_memory(24 * GIB) == 24 * GIB - int(2.4 * GIB)
    assert budget.default_memory(4 * GIB) == 3 * GIB  # at least 1 GiB left
    assert budget.default_memory(GIB) == GIB // 2  # never below half
    assert budget.process_budget(8 * GIB, 2) == 4 * GIB
    assert budget.process_budget(None, 1) == budget.default_memory()
    assert 0 < budget.machine_memory() <= (budget.physical_memory() or 2**62)


def test_load_plan() -> None:
    fits = load_plan(500 * MIB, budget=2 * GIB, working=256 * MIB, held=400 * MIB)
    assert not fits.offload
    assert fits.in_memory == 500 * MIB
    tight = load_plan(500 * MIB, budget=GIB, working=256 * MIB, held=400 * MIB)
    assert tight.offload
    assert tight.in_memory == 1024 * MIB - 656 * MIB
    assert "offloaded" in tight.describe()
    none = load_plan(500 * MIB, budget=300 * MIB, working=256 * MIB, held=400 * MIB)
    assert none.offload
    assert none.in_memory == 0


PEAK_PROBE = """
from pytest_groundtruth.core import budget
block = bytearray(64 * budget.MIB)
for i in range(0, len(block), 4096):
    block[i] = 1
high = budget._status_field("VmHWM")
del block
if not budget.reset_peak():
    print("no-reset")
else:
    print(high, budget._status_field("VmHWM"))
"""


def test_peak_can_be_reset() -> None:
    """In a fresh interpreter: a test process's own peak and resident size move with what
    earlier tests and other threads left (flaky under xdist)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True,
                          timeout=60, check=True)
    if done.stdout.strip() == "no-reset":
        pytest.skip("this kernel has no /proc/self/clear_refs: peaks are per process")
    high, low = (int(v) for v in done.stdout.split())
    assert low < high - 32 * MIB


def test_max_memory_setting(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.groundtruth]\nmax_memory = "6G"\n')
    settings = load_settings(tmp_path)
    assert settings.max_memory == 6 * GIB
    assert settings.memory_budget(workers=2) == 3 * GIB
    assert Settings(root=tmp_path).max_memory is None
    overridden = apply_overrides(settings, {"gt_max_memory": "512M"})
    assert overridden.max_memory == 512 * MIB


@pytest.mark.parametrize("value", ['"lots"', "true", "[1]", '"0GiB"'])
def test_bad_max_memory_names_file_and_key(tmp_path: Path, value: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.groundtruth]\nmax_memory = {value}\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml.*'max_memory'"):
        load_settings(tmp_path)
    with pytest.raises(ConfigError, match="--gt-max-memory"):
        apply_overrides(Settings(root=tmp_path), {"gt_max_memory": "lots"})
