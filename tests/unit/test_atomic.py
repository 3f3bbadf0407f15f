"""Atomic writes leave the old file or the new one, never half of one."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from pytest_groundtruth.core.atomic import atomic_path, atomic_write_text, locked


def test_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_interrupted_write_keeps_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    def interrupted() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half of the ne")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_directory_artifacts_are_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _hold(path: str, seconds: float, log: str) -> None:
    with locked(Path(path)):
        with Path(log).open("a") as fh:
            fh.write(f"start {time.monotonic()}\n")
        time.sleep(seconds)
        with Path(log).open("a") as fh:
            fh.write(f"end {time.monotonic()}\n")


def test_lock_serialises_processes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    procs = [multiprocessing.get_context("spawn").Process(
        target=_hold, args=(str(tmp_path / "x"), 0.3, str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    events = [line.split()[0] for line in log.read_text().splitlines()]
    assert events == ["start", "end", "start", "end"]


def test_a_temporary_names_the_file_it_becomes(tmp_path: Path) -> None:
    """A recipe named the converter's random temporary (``.artifact.gguf.X.gtP-H.partial``),
    so two runs that made the same file recorded different recipes."""
    from pytest_groundtruth.core.atomic import atomic_path, final_path
    from pytest_groundtruth.ggufio import hfconvert

    target = tmp_path / "artifact.gguf"
    with atomic_path(target) as tmp:
        assert tmp != target
        assert final_path(tmp) == target
        call = hfconvert.convert_call(tmp_path / "model", "q8_0", tmp)
        assert call.endswith(f"--outfile {target}")
        tmp.write_bytes(b"x")
    assert final_path(target) == target
