"""A crashed xdist worker ends the run and fails it, said in the summary.

pytest-xdist replaces a worker that dies (a segfault in an engine, the OOM killer,
``os._exit``) by default, and its ``loadgroup``/``loadscope`` schedulers (3.8) mishandle a
replacement that joins while the first collections arrive: they schedule a worker whose
collection they have not registered (a ``KeyError``), or the run waits for work that no
worker holds, silently and for ever. The plugin makes ``loadgroup`` the default
(:func:`~pytest_groundtruth.plugin.collection.prefer_loadgroup`), so it also makes
``--max-worker-restart=0`` the default when xdist distributes (an explicit value is kept):
the run ends at the first crashed worker, which the summary names, and a crash fails the
run even where xdist alone would finish green (a worker lost during collection: "no tests
ran", exit status 0).
"""

from __future__ import annotations

from typing import Any

import pytest

CRASHED = pytest.StashKey[list[str]]()


def prefer_no_restart(option: Any) -> bool:
    """Set ``--max-worker-restart=0`` when xdist distributes and the option is unset.
    Returns whether it was set."""
    if getattr(option, "numprocesses", None) and getattr(
            option, "maxworkerrestart", "unset") is None:
        option.maxworkerrestart = "0"
        return True
    return False


class WorkerCrashes:
    """On the xdist controller: every worker that went down with an error."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        config.stash[CRASHED] = []

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        if error is not None:
            self.config.stash[CRASHED].append(f"{node.gateway.id}: {error}")


def crashed(config: pytest.Config) -> list[str]:
    return config.stash.get(CRASHED, [])


def failed_exit(crashes: list[str], status: int | pytest.ExitCode) -> int | pytest.ExitCode:
    """The exit status with ``crashes``: a run xdist would end green fails (internal error)."""
    if crashes and status in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return pytest.ExitCode.INTERNAL_ERROR
    return status


def summary_lines(crashes: list[str], restarts: object) -> list[str]:
    why = ("the run ends at the first crashed worker: --max-worker-restart=0, "
           "pytest-groundtruth's default under xdist" if str(restarts) == "0"
           else f"--max-worker-restart={restarts}")
    return [f"worker {line} ({why})" for line in crashes]
