"""The length of every array in a GGUF's key/value section, without reading the arrays.

:func:`~pytest_groundtruth.ggufio.reader.scan_gguf` keeps scalars only, and
``gguf.GGUFReader`` takes seconds to build a view per vocabulary string; the metadata
check needs just ``len(tokenizer.ggml.tokens)``. This walks the same records, skipping
array contents by their sizes.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from pytest_groundtruth.ggufio.names import GGUFFormatError

_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def array_lengths(path: Path) -> dict[str, int]:
    """Key -> element count of every array-valued key of the GGUF at ``path``."""
    path = Path(path)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        pos = 0

        def take(fmt: str) -> int:
            nonlocal pos
            size = struct.calcsize(fmt)
            if pos + size > len(buf):
                raise GGUFFormatError(f"{path}: truncated at byte {pos}")
            (value,) = struct.unpack_from(fmt, buf, pos)
            pos += size
            return int(value)

        def skip(vtype: int, count: int = 1) -> None:
            nonlocal pos
            if vtype in _SIZES:
                pos += _SIZES[vtype] * count
            elif vtype == _STRING:
                for _ in range(count):
                    length = take("<Q")  # (not `pos += take(...)`: take moves pos)
                    pos += length
            elif vtype == _ARRAY:
                for _ in range(count):
                    item = take("<I")
                    skip(item, take("<Q"))
            else:
                raise GGUFFormatError(f"{path}: unknown value type {vtype} at byte {pos}")

        if bytes(buf[:4]) != b"GGUF":
            raise GGUFFormatError(f"{path}: not a GGUF file")
        pos = 4
        take("<I")  # version
        take("<Q")  # tensor count
        lengths: dict[str, int] = {}
        for _ in range(take("<Q")):
            length = take("<Q")
            key = bytes(buf[pos:pos + length]).decode("utf-8", errors="replace")
            pos += length
            vtype = take("<I")
            if vtype == _ARRAY:
                item = take("<I")
                lengths[key] = take("<Q")
                skip(item, lengths[key])
            else:
                skip(vtype)
        return lengths
