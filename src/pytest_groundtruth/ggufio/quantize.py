"""The GGUF types people ship, made by llama.cpp's own quantizer (``llama_model_quantize``).

:data:`CATALOG` lists every file type llama.cpp 0.3.36's ``llama-quantize`` writes
*without an importance matrix*, under its lower-case name (``q4_k_m``): what it is
(``ftype``, the ``LLAMA_FTYPE_MOSTLY_*`` member), the GGML type most tensors get
(``main``), and the size llama.cpp documents for it (``tools/quantize/quantize.cpp``'s
``QUANT_OPTIONS``: GB for Llama-3-8B's 8.03 B weights, or bits per weight), which orders
the types by bits per weight (:func:`bits_per_weight`). A file is quantized by
:func:`quantize`, which runs ``llama_model_quantize`` from llama-cpp-python in a child
process (a failed assertion inside ggml aborts the process; it must not be pytest's).

The mixes are llama.cpp's, not ours: a Q4_K_M file holds Q4_K, Q6_K, Q5_0 and Q8_0
tensors, and a tensor whose rows do not split into 256-value super-blocks falls back to a
legacy type (SmolLM2's 576-wide rows mostly do). Mixed files are normal; every check
judges a tensor by its own declared type.

Types left out, with the reason (:data:`NEEDS_IMATRIX`, :data:`LEFT_OUT`): those llama.cpp
refuses without an importance matrix, the ternary types (for ternary-trained models
only), Q1_0 (rows must be multiples of 128, no fallback), Q2_0 (a type number gguf
0.19 cannot read), MXFP4_MOE (expert tensors only).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.core.failures import EngineFailure, FailureKind, RuntimeUnavailable

LLAMA_3_8B_WEIGHTS = 8.03e9  # the model QUANT_OPTIONS sizes refer to


@dataclass(frozen=True)
class QuantType:
    name: str  # the project's quantization name: llama-quantize's, lower case
    ftype: str  # LLAMA_FTYPE_MOSTLY_<ftype>
    main: str  # the GGML type most tensors get
    size: str  # QUANT_OPTIONS' description: "4.58G" (Llama-3-8B) or "4.25 bpw"

    @property
    def bits(self) -> float:
        """Bits per weight as llama.cpp documents the type (size at Llama-3-8B, or bpw)."""
        value = float(self.size.split()[0].rstrip("G"))
        return value if "bpw" in self.size else value * 1e9 * 8 / LLAMA_3_8B_WEIGHTS


CATALOG: dict[str, QuantType] = {t.name: t for t in (
    QuantType("q8_0", "Q8_0", "Q8_0", "7.96G"),
    QuantType("q6_k", "Q6_K", "Q6_K", "6.14G"),
    QuantType("q5_1", "Q5_1", "Q5_1", "5.65G"),
    QuantType("q5_k_m", "Q5_K_M", "Q5_K", "5.33G"),
    QuantType("q5_k_s", "Q5_K_S", "Q5_K", "5.21G"),
    QuantType("q5_0", "Q5_0", "Q5_0", "5.21G"),
    QuantType("q4_1", "Q4_1", "Q4_1", "4.78G"),
    QuantType("q4_k_m", "Q4_K_M", "Q4_K", "4.58G"),
    QuantType("iq4_nl", "IQ4_NL", "IQ4_NL", "4.50 bpw"),
    QuantType("q4_k_s", "Q4_K_S", "Q4_K", "4.37G"),
    QuantType("q4_0", "Q4_0", "Q4_0", "4.34G"),
    QuantType("iq4_xs", "IQ4_XS", "IQ4_XS", "4.25 bpw"),
    QuantType("q3_k_l", "Q3_K_L", "Q3_K", "4.03G"),
    QuantType("q3_k_m", "Q3_K_M", "Q3_K", "3.74G"),
    QuantType("iq3_m", "IQ3_M", "IQ3_S", "3.66 bpw"),
    QuantType("iq3_s", "IQ3_S", "IQ3_S", "3.44 bpw"),
    QuantType("q3_k_s", "Q3_K_S", "Q3_K", "3.41G"),
    QuantType("iq3_xs", "IQ3_XS", "IQ3_S", "3.3 bpw"),
    QuantType("iq3_xxs", "IQ3_XXS", "IQ3_XXS", "3.06 bpw"),
    QuantType("q2_k", "Q2_K", "Q2_K", "2.96G"),
)}
# llama_model_quantize refuses these without an importance matrix ("this quantization
# requires an imatrix!"): IQ1/IQ2 tensors, and Q2_K tensors of a Q2_K_S file.
NEEDS_IMATRIX = ("iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq1_s", "iq1_m", "q2_k_s")
LEFT_OUT = {
    "tq1_0": "ternary: for models trained with ternary weights only",
    "tq2_0": "ternary: for models trained with ternary weights only",
    "q1_0": "rows must be multiples of 128 and llama.cpp defines no fallback type",
    "q2_0": "a tensor type (42) that gguf 0.19 cannot read",
    "mxfp4_moe": "applies to mixture-of-experts expert tensors only",
}
# The original workflow's names and the plain float types, with their GGUF types' bits.
ALIASES = {"int8": "q8_0", "int4": "q4_0"}
FLOAT_BITS = {"float32": 32.0, "float16": 16.0, "bfloat16": 16.0}


def bits_per_weight(quant: str) -> float | None:
    """Nominal bits per weight of a quantization name (None when unknown): the catalog's,
    an alias's type's, or a float type's."""
    if quant in FLOAT_BITS:
        return FLOAT_BITS[quant]
    name = ALIASES.get(quant, quant)
    return CATALOG[name].bits if name in CATALOG else None


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
    call = (f"llama_cpp.llama_model_quantize({str(source)!r}, {str(out)!r}, "
            f"ftype=LLAMA_FTYPE_MOSTLY_{CATALOG[quant].ftype}, nthread={threads}"
            f"{', pure=True' if pure else ''}"
            f"{f', tt_overrides=<{len(tensor_types)} tensor types>' if tensor_types else ''})")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise EngineFailure(FailureKind.TIMEOUT, f"llama.cpp's quantizer ran over {timeout} s",
                            call=call) from exc
    if done.returncode != 0 or not out.is_file():
        raise EngineFailure(FailureKind.CRASHED,
                            f"llama.cpp's quantizer failed on {source} ({quant}, exit "
                            f"{done.returncode})", call=call, stderr=done.stderr)
    return call


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
