"""The quantization catalogue: every quantization name the package knows and its GGUF type.

Two tables, imported by everything that maps a name to a type (the GGUF writer, the
llama.cpp runtime and its quantizer, the apr stand-in, the falsification tables):

* :data:`GGUF_TYPES`: the project's own names (``float32``, ``int8``, ...) that name one
  GGUF type directly;
* :data:`CATALOG`: every file type llama.cpp 0.3.36's ``llama-quantize`` writes
  *without an importance matrix*, under its lower-case name (``q4_k_m``): what it is
  (``ftype``, the ``LLAMA_FTYPE_MOSTLY_*`` member), the GGML type most tensors get
  (``main``), and the size llama.cpp documents for it (``tools/quantize/quantize.cpp``'s
  ``QUANT_OPTIONS``: GB for Llama-3-8B's 8.03 B weights, or bits per weight), which
  orders the types by bits per weight (:func:`bits_per_weight`).

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

from dataclasses import dataclass

# The project's quantization names that name one GGUF type (settings.QUANTIZATIONS).
GGUF_TYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int8": "Q8_0",
    "int4": "Q4_0",
    "q4_1": "Q4_1",
}


def short_name(quant: str) -> str:
    """A short label for tables: the GGUF type's name in lower case without a ``_0``
    suffix (``int8`` -> ``q8``, ``float32`` -> ``f32``); other names as they are."""
    found = GGUF_TYPES.get(quant)
    return found.lower().removesuffix("_0") if found else quant


def precision(quant: str) -> str:
    """One name per precision: ``int8`` and ``q8_0`` are one (the GGUF type's lower-case
    name for the quantized types; other names as they are)."""
    found = GGUF_TYPES.get(quant)
    return found.lower() if found and found.startswith("Q") else quant


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
# The plain float types' bits; int8 and int4 are their GGUF types' (GGUF_TYPES).
FLOAT_BITS = {"float32": 32.0, "float16": 16.0, "bfloat16": 16.0}


def bits_per_weight(quant: str) -> float | None:
    """Nominal bits per weight of a quantization name (None when unknown): the catalog's,
    an alias's type's, or a float type's."""
    if quant in FLOAT_BITS:
        return FLOAT_BITS[quant]
    name = GGUF_TYPES.get(quant, quant).lower()
    return CATALOG[name].bits if name in CATALOG else None
