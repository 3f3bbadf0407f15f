"""Open runners, kept for reuse: a model is loaded once per process, not once per test.

At most ``size`` runners stay open; the least recently used is closed first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from pytest_groundtruth.runtimes.base import Runner


class RunnerPool:
    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._open: OrderedDict[str, Runner] = OrderedDict()

    def get(self, key: str, open_runner: Callable[[], Runner]) -> Runner:
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        while len(self._open) >= self.size:
            _, old = self._open.popitem(last=False)
            old.close()
        runner = open_runner()
        self._open[key] = runner
        return runner

    def close(self) -> None:
        while self._open:
            _, runner = self._open.popitem()
            runner.close()
