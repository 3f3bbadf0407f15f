"""The GGUF types people ship, made by llama.cpp's own quantizer (``llama_model_quantize``).

The types it writes are the catalogue's (:data:`~pytest_groundtruth.ggufio.quants.CATALOG`).
A file is quantized by :func:`quantize`, which runs ``llama_model_quantize`` from
llama-cpp-python in a child process (a failed assertion inside ggml aborts the process;
it must not be pytest's).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_groundtruth.core import process
from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable
from pytest_groundtruth.ggufio.quants import CATALOG, NEEDS_IMATRIX


def ftype_number(ftype: str) -> int:
    import llama_cpp

    number = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}", None)
    if not isinstance(number, int):
        raise RuntimeUnavailable(f"the installed llama-cpp-python has no LLAMA_FTYPE_MOSTLY_"
                                 f"{ftype}; upgrade it (pip install -U llama-cpp-python)")
    return number


def command(source: Path, out: Path, quant: str, threads: int, pure: bool = False,
            tensor_types: Mapping[str, str] | None = None) -> list[str]:
    """The child process that quantizes ``source`` (F32 or F16 GGUF) to ``out``."""
    types = [f"types={json.dumps(dict(tensor_types), sort_keys=True)}"] if tensor_types else []
    return [sys.executable, "-m", __name__, str(source), str(out), CATALOG[quant].ftype,
            str(threads), *(["pure"] if pure else []), *types]


def main_quant(types: Mapping[str, str]) -> str | None:
    """The :data:`CATALOG` name whose main type most of ``types``' quantized tensors have
    (a file's type mix -> the llama.cpp type it is closest to), or None."""
    mains = {t.main: t.name for t in reversed(CATALOG.values())}
    counts: dict[str, int] = {}
    for kind in types.values():
        if kind in mains:
            counts[kind] = counts.get(kind, 0) + 1
    return mains[max(counts, key=lambda k: counts[k])] if counts else None


def quantize(source: Path, out: Path, quant: str, threads: int = 2, pure: bool = False,
             timeout: float = 1800.0, tensor_types: Mapping[str, str] | None = None) -> str:
    """Quantize ``source`` to ``out`` as ``quant`` (a :data:`CATALOG` name) with llama.cpp's
    quantizer; return the call. ``pure``: every tensor at the type's main type, token
    embeddings and output included (``llama-quantize --pure``). ``tensor_types``: tensor
    name -> GGML type name (``Q6_K``) for each tensor that gets a type of its own
    (``llama-quantize --tensor-type``, matched by whole name). A failure raises
    :class:`EngineFailure` with its stderr."""
    if quant not in CATALOG:
        raise ValueError(f"{quant!r} is not a llama.cpp quantizer type here (known: "
                         f"{', '.join(CATALOG)}; needing an importance matrix: "
                         f"{', '.join(NEEDS_IMATRIX)})")
    argv = command(source, out, quant, threads, pure, tensor_types)
    call = quantize_call(source, out, quant, threads, pure, tensor_types)
    try:
        done = process.invoke(argv, timeout, tool="llama.cpp's quantizer")
    except EngineFailure as exc:  # the call as the user would make it in Python
        raise EngineFailure(exc.kind, str(exc.args[0]) if exc.args else str(exc), call=call,
                            stderr=exc.stderr) from None
    if done.returncode != 0 or not out.is_file():
        raise EngineFailure(FailureKind.CRASHED,
                            f"llama.cpp's quantizer failed on {source} ({quant}, exit "
                            f"{done.returncode})", call=call,
                            stderr=process.tail(process.strip_ansi(done.stderr)))
    return call


def quantize_call(source: Path, out: Path, quant: str, threads: int = 2, pure: bool = False,
                  tensor_types: Mapping[str, str] | None = None) -> str:
    """What :func:`quantize` calls (in its child process), as a user would call it."""
    return (f"llama_cpp.llama_model_quantize({str(source)!r}, {str(out)!r}, "
            f"ftype=LLAMA_FTYPE_MOSTLY_{CATALOG[quant].ftype}, nthread={threads}"
            f"{', pure=True' if pure else ''}"
            f"{f', tt_overrides=<{len(tensor_types)} tensor types>' if tensor_types else ''})")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pytest_groundtruth.ggufio.quantize SOURCE OUT FTYPE THREADS [pure]``."""
    import ctypes

    import llama_cpp

    source, out, ftype, threads, *flags = argv if argv is not None else sys.argv[1:]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_number(ftype)
    params.nthread = int(threads)
    params.pure = "pure" in flags
    types: dict[str, str] = next(
        (json.loads(f[len("types="):]) for f in flags if f.startswith("types=")), {})
    if types:
        import gguf

        overrides = (llama_cpp.llama_model_tensor_override * (len(types) + 1))()
        for i, (name, kind) in enumerate(sorted(types.items())):
            overrides[i].pattern = f"^{re.escape(name)}$".encode()
            overrides[i].type = int(gguf.GGMLQuantizationType[kind])
        overrides[len(types)].pattern = None  # the list ends at a null pattern
        params.tt_overrides = ctypes.cast(
            overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    code = int(llama_cpp.llama_model_quantize(source.encode(), out.encode(),
                                              ctypes.byref(params)))
    if code != 0:
        print(f"llama_model_quantize returned {code}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover - the child process of quantize()
    sys.exit(main())
