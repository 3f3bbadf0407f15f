"""``--gt-shard K/N``: keep this shard's tests, deselect the others (:mod:`..suites.shards`).

Runs after the other plugins' ``pytest_collection_modifyitems`` (``-m``, ``-k``, the
baseline), so the split balances what is actually going to run. Under pytest-xdist every
worker collects and splits on its own: the split depends only on the collected node ids,
the groups and the timings file, so the workers agree (xdist checks that they do).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from pytest_groundtruth.plugin.items import ParityItem
from pytest_groundtruth.report import results_json
from pytest_groundtruth.suites.shards import Collected, Shard, ShardError, Split, split


def test_of(item: pytest.Item, root: Path) -> Collected:
    """The split's view of a collected test: a parity case by its xdist group (and the
    group of a pair case's other side); any other test by its own ``xdist_group`` mark,
    else by its module."""
    skips = item.get_closest_marker("skip") is not None
    if isinstance(item, ParityItem):
        case = item.case
        linked: tuple[str, ...] = ()
        if case.other is not None:
            other = f"{case.model}-{case.runtime}-{case.other}"
            linked = (other if case.device == "cpu" else f"{other}@{case.device}",)
        return Collected(item.plain_nodeid, case.group, linked, runs=not skips)
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        group = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    else:
        path = Path(str(item.path))
        group = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    return Collected(item.nodeid, f"tests:{group}", runs=not skips)


def parse(value: str) -> Shard:
    try:
        return Shard.parse(value)
    except ShardError as exc:
        raise pytest.UsageError(str(exc)) from None


def measured(timings: str | None) -> dict[str, float]:
    if not timings:
        return {}
    try:
        return results_json.durations(Path(timings))
    except results_json.ResultsError as exc:
        raise pytest.UsageError(f"--gt-shard-timings: {exc}") from None


def select(config: pytest.Config, items: list[pytest.Item]) -> Split | None:
    """Narrow ``items`` to the shard ``--gt-shard`` names (in place); the split, or None
    without the option."""
    value = config.option.gt_shard
    if not value:
        return None
    shard = parse(value)
    tests = [test_of(item, config.rootpath) for item in items]
    chosen = split(tests, shard, measured(config.option.gt_shard_timings))
    keep, drop = _partition(items, tests, chosen.selected)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
    return chosen


def _partition(items: list[pytest.Item], tests: Iterable[Collected], selected: frozenset[str]
               ) -> tuple[list[pytest.Item], list[pytest.Item]]:
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item, test in zip(items, tests, strict=True):
        (keep if test.nodeid in selected else drop).append(item)
    return keep, drop
