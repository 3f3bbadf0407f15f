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

from typing import Any


def open_safetensors(path: str, framework: str) -> Any:
    """``safe_open(path, framework)`` reading with ``pread`` where safetensors can."""
    from safetensors import safe_open

    try:
        return safe_open(path, framework=framework, backend="pread")
    except TypeError:  # safetensors < 0.7: no backend argument
        return safe_open(path, framework=framework)
