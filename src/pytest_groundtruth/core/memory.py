"""Give memory back to the operating system once a model is released.

Closing a runner drops the last reference to its weights, but glibc's allocator keeps
freed heap memory for reuse: large tensors freed after the first few are served from
the heap, not from their own mappings (the mmap threshold rises as mappings are freed),
so a process that opened a second model still holds the pages of the first, and its
resident memory grows with every model it ever loaded. :func:`release_memory` collects
garbage (cycles that hold tensors) and then asks glibc to return free pages
(``malloc_trim(0)``). Where the C library is not glibc (musl, macOS, Windows) only the
collection runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    fn: Callable[[int], int] = trim
    return fn


def trim_heap() -> bool:
    """Return freed heap pages to the OS (``malloc_trim(0)``: a tenth of a second when
    hundreds of MiB come back, microseconds when nothing does); True when glibc trimmed."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def release_memory() -> bool:
    """Collect garbage (a full collection: a few tenths of a second in a process that
    imported torch and transformers), then :func:`trim_heap`."""
    gc.collect()
    return trim_heap()
