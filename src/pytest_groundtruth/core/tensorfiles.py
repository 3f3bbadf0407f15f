"""Open a safetensors file for reading one tensor at a time, without mapping it.

``safe_open`` maps the whole file by default: every tensor read leaves its pages
resident in the process (file-backed, counted in its resident memory) until the file
is closed, so a pass over a float32 model's weights (the integrity check, the GGUF
export) ends holding the whole file beside whatever the pass made. safetensors 0.7+
reads with ``pread`` instead when asked (``backend="pread"``): a tensor read is a copy
freed with it, and the file's pages stay in the page cache, outside the process. Older
safetensors (no ``backend``) map as before.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any


def open_safetensors(path: str, framework: str) -> Any:
    """``safe_open(path, framework)`` reading with ``pread`` where safetensors can."""
    from safetensors import safe_open

    try:
        return safe_open(path, framework=framework, backend="pread")
    except TypeError:  # safetensors < 0.7: no backend argument
        return safe_open(path, framework=framework)


# safetensors dtype -> (numpy dtype of the stored values, bytes per value)
_ROW_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "F64": ("<f8", 8)}


def safetensors_header(path: str) -> tuple[int, dict[str, Any]]:
    """(where the data starts, the JSON header) of a safetensors file."""
    with Path(path).open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header: dict[str, Any] = json.loads(fh.read(length))
    return 8 + length, header


def read_rows(path: str, name: str, start: int, stop: int,
              header: tuple[int, dict[str, Any]] | None = None) -> Any:
    """Rows ``start:stop`` (first dimension) of tensor ``name`` as float32, read with one
    ``pread`` of just those bytes: safetensors' own ``get_slice`` reads the whole tensor
    with the ``pread`` backend, and maps the file with the other. ``header``: from
    :func:`safetensors_header`, read when None."""
    import numpy as np

    base, table = header if header is not None else safetensors_header(path)
    info = table[name]
    shape = [int(d) for d in info["shape"]]
    if info["dtype"] not in _ROW_DTYPES or not shape:
        raise ValueError(f"{path}: {name} ({info['dtype']}, shape {shape}) cannot be read "
                         "by rows")
    stored, size = _ROW_DTYPES[info["dtype"]]
    stop = min(stop, shape[0])
    start = min(max(start, 0), stop)
    row = math.prod(shape[1:]) * size
    offset = base + int(info["data_offsets"][0]) + start * row
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, (stop - start) * row, offset)
    finally:
        os.close(fd)
    values = np.frombuffer(data, dtype=stored).reshape([stop - start, *shape[1:]])
    if info["dtype"] == "BF16":  # the upper half of a float32
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)
