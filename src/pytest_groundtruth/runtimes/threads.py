"""How many CPU threads an engine may use: the CPUs shared out among pytest-xdist workers.

One rule for every in-process engine (llama.cpp's ``n_threads``, torch's intra-op
threads): the CPUs this process may run on, divided by the number of pytest-xdist
workers (``PYTEST_XDIST_WORKER_COUNT``, which xdist sets in each worker), at most
:data:`MAX_THREADS`, at least one. Engines that spin while they wait (llama.cpp) or
that start one OpenMP thread per core (torch) otherwise oversubscribe the machine:
two workers each running as many threads as there are cores slowed a 5 s generation
test to 350 s on 2 cores (CI, 2026-11-30).

A user's explicit setting wins: a runtime's ``n_threads`` option, and for torch the
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` environment variables (:func:`torch_threads`).
"""

from __future__ import annotations

import os

MAX_THREADS = 8
USER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def xdist_workers() -> int:
    """How many pytest-xdist workers share the machine (1 outside xdist)."""
    try:
        return max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    except ValueError:
        return 1


def default_threads() -> int:
    """The CPUs this process may use, shared out among pytest-xdist workers, at most 8."""
    return max(1, min(cpu_count() // xdist_workers(), MAX_THREADS))


def torch_threads(explicit: int | None = None) -> int | None:
    """The torch intra-op thread count to set, or None to leave torch's own setting.

    ``explicit`` (a runtime's ``n_threads`` option) wins; then an ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` in the environment (torch already follows it: left alone); else
    :func:`default_threads`.
    """
    if explicit is not None:
        return explicit
    if any(os.environ.get(name) for name in USER_THREAD_VARIABLES):
        return None
    return default_threads()
