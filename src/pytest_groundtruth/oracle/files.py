"""Writing oracle files safely: compare with what is on disk, write only when allowed.

Regenerating on the same machine reproduces the files byte for byte. An existing file
whose content would change is left alone unless ``force`` is set; either way the
result says which files changed and how (first differing token, or which fields).
Another machine's float32 kernels move log-probabilities in the sixth decimal: a
tolerance classifies such changes as noise (:mod:`pytest_groundtruth.oracle.diff`).
Every write is atomic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.oracle.diff import compare_texts
from pytest_groundtruth.oracle.format import (
    OracleError,
    load_oracle,
    load_perplexity,
    with_seal,
)


@dataclass(frozen=True)
class OracleChange:
    path: Path
    status: str  # "new" | "unchanged" | "sealed" | "noise" | "changed" | "unreadable"
    detail: str = ""
    written: bool = False


def reconcile(path: Path, new_text: str, force: bool, check: bool, decode: Any = None,
              tolerance: float | None = None) -> OracleChange:
    """Compare ``new_text`` with the file at ``path``; write it when allowed.

    With a ``tolerance`` (nats), a change that is only numeric noise within it (see
    :mod:`pytest_groundtruth.oracle.diff`) is reported as ``noise`` and keeps the file.
    """
    if not path.is_file():
        write = not check
        if write:
            atomic_write_text(path, new_text)
        return OracleChange(path, "new", written=write)
    try:
        old_text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        old_text = ""  # load_oracle below says what is wrong with it
    if old_text == new_text:
        return OracleChange(path, "unchanged")
    sealed = with_seal(old_text)
    if sealed == new_text:  # the same content, written before seals: add the seal only
        if not check:
            atomic_write_text(path, sealed)
        return OracleChange(path, "sealed", "seal added, content unchanged", written=not check)
    try:
        if "topk" in json.loads(new_text):
            load_oracle(path)
        else:
            load_perplexity(path)
    except OracleError as exc:
        detail, status = str(exc), "unreadable"
    else:
        difference = compare_texts(old_text, new_text, decode)
        detail = difference.detail
        noise = tolerance is not None and difference.within(tolerance)
        status = "noise" if noise else "changed"
    write = force and not check
    if write:
        atomic_write_text(path, new_text)
    elif status == "noise" and sealed != old_text and not check:
        atomic_write_text(path, sealed)  # kept, and sealed as it is
        detail += "; seal added to the kept content"
    return OracleChange(path, status, detail, written=write)
