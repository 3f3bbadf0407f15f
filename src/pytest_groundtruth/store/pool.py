"""Open runners, kept for reuse: a model is loaded once per process, not once per test.

At most ``size`` runners stay open in a pool; the least recently used is closed first.
A process holds one pool per context (the parity matrix of each ``groundtruth.toml``,
the fixtures), and a model open in one pool is memory that the next model, opened in
another, would sit beside: so opening a runner first closes the runners of every other
pool of the process (:func:`close_open_runners`), and the freed heap goes back to the
operating system (:func:`~pytest_groundtruth.core.memory.trim_heap`) before the next
model loads; a runner's own ``close`` collects the garbage its engine leaves. Code that
loads a model outside any pool (oracle generation) calls :func:`close_open_runners`
first.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

from pytest_groundtruth.core.memory import trim_heap
from pytest_groundtruth.runtimes.base import Runner

_POOLS: weakref.WeakSet[RunnerPool] = weakref.WeakSet()


class RunnerPool:
    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._open: OrderedDict[str, Runner] = OrderedDict()
        _POOLS.add(self)

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, key: str) -> bool:
        return key in self._open
    def get(self, key: str, open_runner: Callable[[], Runner]) -> Runner:
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        closed = close_open_runners(keep=self)
        while len(self._open) >= self.size:
            _, old = self._open.popitem(last=False)
            old.close()
            closed += 1
        if closed:
            trim_heap()  # before the next model is loaded, not after
        runner = open_runner()
        self._open[key] = runner
        return runner

    def close(self) -> None:
        had = bool(self._open)
        self._close_all()
        if had:
            trim_heap()

    def _close_all(self) -> int:
        closed = 0
        while self._open:
            _, runner = self._open.popitem()
            runner.close()
            closed += 1
        return closed


def close_open_runners(keep: RunnerPool | None = None) -> int:
    """Close the runners of every pool of this process but ``keep``; how many closed.
    (The caller gives the memory back once it is done closing: :func:`trim_heap`.)"""
    return sum(pool._close_all() for pool in list(_POOLS) if pool is not keep)
