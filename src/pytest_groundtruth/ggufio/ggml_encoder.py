"""ggml's own encoders (``ggml_quantize_chunk``), for the types ``gguf.quants`` cannot encode.

llama-cpp-python ships llama.cpp's ``libggml-base``; its ``ggml_quantize_chunk`` is what
``llama-quantize`` calls (without an importance matrix it runs the ``*_ref`` kernels),
so the K-quants and IQ4_NL/IQ4_XS get the very reference encoding llama.cpp would write.
The library is loaded with ctypes on first use; a type is used only when the library's
own name for its number (``ggml_type_name``) is the name ``gguf`` gives that number, and
never for types that need an importance matrix. Without llama-cpp-python,
:func:`available` says why and those types have no reference.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import cache
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt


@cache
def _library() -> ctypes.CDLL | str:
    """The loaded libggml-base, or the reason it cannot be loaded."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return "llama-cpp-python is not installed (it ships ggml's encoders)"
    lib_dir = Path(spec.origin).parent / "lib"
    found = sorted(lib_dir.glob("libggml-base.*"))
    if not found:
        return f"no libggml-base in {lib_dir}"
    try:
        lib = ctypes.CDLL(str(found[0]))
    except OSError as exc:
        return f"cannot load {found[0]} ({exc})"
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
    ]
    lib.ggml_type_name.restype = ctypes.c_char_p
    lib.ggml_type_name.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def available(qtype: str) -> str | None:
    """None when ggml can encode ``qtype`` here, else the reason it cannot."""
    lib = _library()
    if isinstance(lib, str):
        return lib
    try:
        number = int(gguf.GGMLQuantizationType[qtype])
    except KeyError:
        return f"gguf does not know type {qtype}"
    name = lib.ggml_type_name(number)
    if name is None or name.decode().upper() != qtype.upper():
        return f"libggml's type {number} is {name!r}, not {qtype} (version mismatch)"
    if lib.ggml_quantize_requires_imatrix(number):
        return f"{qtype} cannot be encoded without an importance matrix"
    return None


def encode(rows: npt.NDArray[np.float32], qtype: str,
           importance: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.uint8]:
    """``rows`` (2-D, whole blocks per row) as ``qtype``'s bytes, ``ggml_quantize_chunk``.

    ``importance``: one weight per column (an importance matrix, as llama-quantize passes
    from ``--imatrix``), which makes the K-quant and i-quant encoders minimize a weighted
    error; without it they use the reference (unweighted) search."""
    reason = available(qtype)
    lib = _library()
    if reason is not None or isinstance(lib, str):
        raise NotImplementedError(reason)
    ggml = gguf.GGMLQuantizationType[qtype]
    src = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, rows.shape[-1])
    n_rows, n_per_row = src.shape
    byte_shape = gguf.quants.quant_shape_to_byte_shape((n_rows, n_per_row), ggml)
    dst = np.empty(byte_shape, dtype=np.uint8)
    weights = None
    if importance is not None:
        weights = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1)
        if weights.size != n_per_row:
            raise ValueError(f"importance has {weights.size} weights for {n_per_row} columns")
    written = lib.ggml_quantize_chunk(int(ggml), src.ctypes.data, dst.ctypes.data, 0, n_rows,
                                      n_per_row, None if weights is None else weights.ctypes.data)
    if written != dst.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes for {qtype}, "
                           f"expected {dst.nbytes}")
    return dst
