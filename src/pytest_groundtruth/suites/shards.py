"""Shards: a test run split into N parts of about equal cost, the same on every machine.

``pytest --gt-shard K/N`` runs part K of N. The unit of the split is the pytest-xdist
group (:attr:`~pytest_groundtruth.suites.case.Case.group`: one artifact's conversion,
load and tests), so an artifact is converted and loaded by one shard only; a pair case
(drift, the perplexity gap), which reads the results of a second artifact, ties that
artifact's group to its own, so both land in one shard instead of two shards making the
second artifact's results twice. Tests outside the matrix (plain pytest functions beside
the ``groundtruth.toml``) are units too: by their own ``xdist_group`` mark when they have
one, else one unit per module, so a module's fixtures are set up by one shard.

Units go to shards by cost, longest first, each to the shard with the least cost so far
(ties: the lower shard number): the "longest processing time" rule, whose slowest shard
is at most 4/3 of the best possible split. A unit's cost is what its tests took in an
earlier run, read from that run's results JSON (``--gt-shard-timings``: ``--gt-results``
or ``groundtruth merge`` wrote it); a unit the file does not know (or every unit, with no
file) gets :func:`static_cost`. Everything is sorted by name before it is summed or
compared, so the same tests and the same file give the same split on every machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The static estimate, in seconds, of a unit's cost when no earlier run measured it:
# the embedded matrix's floor (docs/benchmarks.md) has about 2-3 s per artifact to
# convert and load and about 1 s per test that runs an engine or reads its cache.
GROUP_SETUP_S = 3.0
PER_TEST_S = 1.0

SHARD = re.compile(r"^([1-9][0-9]*)/([1-9][0-9]*)$")


class ShardError(ValueError):
    """A ``--gt-shard`` value that is not ``K/N`` with ``1 <= K <= N``."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        found = SHARD.match(text.strip())
        if not found:
            raise ShardError(f"--gt-shard {text!r}: expected K/N with whole numbers "
                             "1 <= K <= N (e.g. 1/2)")
        index, count = int(found.group(1)), int(found.group(2))
        if index > count:
            raise ShardError(f"--gt-shard {text!r}: shard {index} of {count} does not exist "
                             f"(K must be 1 to {count})")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Collected:
    """What the split needs to know of one collected test."""

    nodeid: str  # the plain node id (without xdist's ``@group``)
    group: str  # its unit's own group
    linked: tuple[str, ...] = ()  # other groups it reads from (a pair case's other side)
    runs: bool = True  # False when known at collection to skip


class _Groups:
    """Union-find over group names (pair cases join two groups into one unit)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller name is the root: independent of the order of joins
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def units(tests: Iterable[Collected]) -> dict[str, list[Collected]]:
    """The tests by unit (named by its smallest group name)."""
    tests = list(tests)
    groups = _Groups()
    for test in tests:
        groups.find(test.group)
        for other in test.linked:
            groups.join(test.group, other)
    out: dict[str, list[Collected]] = {}
    for test in tests:
        out.setdefault(groups.find(test.group), []).append(test)
    return out


def static_cost(tests: Iterable[Collected]) -> float:
    """A unit's estimated seconds: one artifact's setup (only when any test runs) plus a
    second per test that runs; skipped tests cost nothing."""
    running = sum(1 for t in tests if t.runs)
    return GROUP_SETUP_S + PER_TEST_S * running if running else 0.0


def unit_costs(by_unit: Mapping[str, list[Collected]], measured: Mapping[str, float]
               ) -> dict[str, float]:
    """Each unit's cost: the sum of its tests' measured seconds when ``measured`` (node id
    -> seconds) knows every running test of the unit, else :func:`static_cost`."""
    out = {}
    for name, tests in by_unit.items():
        running = [t for t in tests if t.runs]
        if running and all(t.nodeid in measured for t in running):
            out[name] = round(sum(measured[t.nodeid] for t in sorted(
                running, key=lambda t: t.nodeid)), 3)
        else:
            out[name] = static_cost(tests)
    return out


def assign(costs: Mapping[str, float], count: int) -> dict[str, int]:
    """Unit -> shard (1-based): longest first to the least loaded shard."""
    loads = [0.0] * count
    out = {}
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        shard = min(range(count), key=lambda i: (loads[i], i))
        loads[shard] += costs[name]
        out[name] = shard + 1
    return out


@dataclass(frozen=True)
class Split:
    shard: Shard
    selected: frozenset[str]  # node ids of this shard
    loads: tuple[float, ...]  # each shard's cost
    units: int  # units in all

    def summary(self) -> str:
        mine = self.loads[self.shard.index - 1]
        return (f"shard {self.shard}: {len(self.selected)} tests, estimated {mine:.0f} s of "
                f"{sum(self.loads):.0f} s over {self.units} groups (shards: "
                + ", ".join(f"{load:.0f}" for load in self.loads) + " s)")


def split(tests: Iterable[Collected], shard: Shard, measured: Mapping[str, float] | None = None
          ) -> Split:
    """The tests of ``shard``, and what each shard costs."""
    by_unit = units(tests)
    costs = unit_costs(by_unit, measured or {})
    where = assign(costs, shard.count)
    loads = [0.0] * shard.count
    for name, cost in sorted(costs.items()):
        loads[where[name] - 1] += cost
    selected = frozenset(t.nodeid for name, group in by_unit.items()
                         if where[name] == shard.index for t in group)
    return Split(shard, selected, tuple(round(x, 3) for x in loads), len(by_unit))
