"""What a tensor's declared quantization type is expected to cost it, and the bounds.

The reference for an artifact tensor ``A`` of declared type ``T`` is its source tensor
``S`` encoded and decoded with ``T`` by ggml's reference kernels (``gguf.quants``, the
numpy port that is bit-identical to llama.cpp's converter and ``llama-quantize``):
``R = dequantize(quantize(S, T), T)``. ``e_ref = |R - S| / |S|`` is what ``T`` costs
*this very tensor*; no number is tuned on a model. From it (docs/integrity.md):

``rel_error <= k_T * e_ref + u_T``
    ``k_T`` = 1.1 x the widest ratio between two admissible step sizes of the format:
    a symmetric format with integer levels ``-2^(b-1) .. 2^(b-1)-1`` can cover a block's
    largest value with ``2^(b-1)`` or ``2^(b-1)-1`` steps, so an encoder may pick a
    step up to ``2^(b-1) / (2^(b-1)-1)`` times the reference's (Q4_0: 8/7, Q5_0: 16/15,
    Q8_0: 128/127); affine formats (Q4_1, Q5_1) and plain floats have one sensible step
    (ratio 1). The 1.1 absorbs clipping and the estimate's sampling noise.
    ``u_T`` is the precision of what the format stores besides the integers: a block
    constant kept as float16 may be rounded either way by another encoder, which moves
    the values by up to 2^-11 on average (half a float16 ulp); plain float tensors get
    float32 round-off, 2^-23.
``|scale - ref_scale| <= (k_T * e_ref)^2 + u_T + 4 * e_ref / sqrt(n)``
    Rounding to nearest leaves the scale at 1; an encoder that refits each block's
    scale by least squares makes its error orthogonal to its output, which pulls the
    scale to ``1 - e^2``. Anything further is a whole-tensor scale (4 standard errors
    of the estimate allowed), even when it is far smaller than the quantization noise.
``|bias - ref_bias| <= 4 * (e_ref + u_T) / sqrt(n_blocks) + u_T * offset``
    Errors within a block share its constants, so the standard error of the mean error
    is counted per block; ``offset`` (mean ``|block minimum|`` / rms for affine formats,
    ``|mean|`` / rms otherwise) bounds what a consistently rounded stored offset shifts.
``max |A - S| <= 1.1 * step + u_T * max|S|`` in every block (the legacy block formats)
    The three bounds above are whole-tensor statistics: damage to a few rows (a
    shuffled embedding row) dilutes into them. No correct encoder moves a value further
    than one step of the coarsest admissible grid of its block (rounding to nearest
    moves it half a step; clipping at the short end of a symmetric range, or a refitted
    scale, up to one), where that step is ``max|block| / (2^(b-1) - 1)`` for symmetric
    and ``(max - min) / (2^b - 1)`` for affine formats.

``|A_b - S_b| <= BLOCK_FACTOR * (|R_b - S_b| + u_T |S_b|)`` per block (K-quants, i-quants)
    Their blocks (super-blocks of 256 values; 32 for IQ4_NL) have no single grid, so
    the step check does not apply; instead each block's error is compared with the
    reference encoding's error on the same block. A correct encoder that weighs columns
    differently (an importance matrix) moves single blocks: with log-normal column
    weights (sigma 1.5) on SmolLM2's ``ffn_down`` the worst block of Q4_K held 2.84x the
    reference's error (99.9th percentile 2.1; Q5_K 2.38, Q6_K 2.25, IQ4_NL 2.54, Q3_K,
    Q2_K, IQ4_XS and IQ3_S at most 1.30), so ``BLOCK_FACTOR = 4``. A zeroed, swapped or
    rescaled block holds 10-100x the reference's error.

Types ``gguf.quants`` cannot encode (the K-quants, IQ4_NL, IQ4_XS, ...) are encoded by
ggml itself
(:mod:`pytest_groundtruth.ggufio.ggml_encoder`, the library llama-cpp-python ships); their formats
search scales and store 4-8 bit sub-block scales, so the admissible-step argument does
not give a ratio and ``k = 1.25`` is used. Types no encoder here can write (those that
need an importance matrix, or all of them without llama-cpp-python) have no reference:
their values are not judged (the report says so), their presence and shape are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import gguf
import numpy as np
import numpy.typing as npt

from pytest_groundtruth.ggufio import ggml_encoder

FloatArray = npt.NDArray[np.float32]

MARGIN = 1.1
GENERIC_FACTOR = 1.25  # a reference encoder but no level-range argument (K-quants, IQ4, ...)
BLOCK_FACTOR = 4.0  # per-block error over the reference's, K-quants and i-quants (docstring)
SIGMAS = 4.0
FP16_CONSTANT = 2.0**-11  # half an ulp of a float16 constant, relative
FLOAT_ROUNDOFF = 2.0**-23  # float32 round-off, relative
# Symmetric formats: their integer level range (lowest, highest).
LEVELS: dict[str, tuple[int, int]] = {
    "Q4_0": (-8, 7),
    "Q5_0": (-16, 15),
    "Q8_0": (-128, 127),
    "Q8_1": (-128, 127),
}
AFFINE = frozenset({"Q4_1", "Q5_1", "Q2_K", "Q4_K", "Q5_K"})
FLOATS = frozenset({"F32", "F16", "BF16"})
# Formats whose blocks are uniform grids: bits, affine (the per-block step check).
GRIDS: dict[str, tuple[int, bool]] = {
    "Q4_0": (4, False), "Q5_0": (5, False), "Q8_0": (8, False),
    "Q4_1": (4, True), "Q5_1": (5, True),
}
LIBRARY_PREFIXES = ("torch.", "torchao.")


@dataclass(frozen=True)
class Scheme:
    """How one declared type encodes values, as far as the bounds need to know."""

    qtype: str
    kind: str  # "exact" (gguf.quants, or a plain cast), "ggml" (libggml's encoder), "none"
    block: int  # values per block (1 for plain floats)
    affine: bool
    factor: float  # k_T
    precision: float  # u_T

    @property
    def describe(self) -> str:
        if self.kind == "none":
            return f"{self.qtype}: no reference encoder here (values not judged)"
        what = {"exact": "gguf.quants", "ggml": "ggml_quantize_chunk"}.get(self.kind, self.kind)
        return f"{self.qtype}: reference {what}, k={self.factor:.3g}, u={self.precision:.3g}"


def step_ratio(qtype: str) -> float:
    """The widest ratio between two admissible step sizes of a symmetric format, else 1."""
    if qtype not in LEVELS:
        return 1.0
    low, high = LEVELS[qtype]
    return max(-low, high) / min(-low, high)


@cache
def scheme(qtype: str) -> Scheme:
    """The :class:`Scheme` of GGML type ``qtype`` (its name: ``Q4_0``, ``F32``, ...), or
    of a library type label (``torch.bfloat16``, ``torchao.Int8Tensor``)."""
    if qtype.startswith(LIBRARY_PREFIXES):
        return library_scheme(qtype)
    try:
        ggml = gguf.GGMLQuantizationType[qtype]
        block = gguf.GGML_QUANT_SIZES[ggml][0]
    except KeyError:
        return Scheme(qtype, "none", 1, False, 1.0, FLOAT_ROUNDOFF)
    if qtype in FLOATS:
        return Scheme(qtype, "exact", 1, False, MARGIN, FLOAT_ROUNDOFF)
    affine = qtype in AFFINE
    if _has_encoder(ggml):
        factor = MARGIN * step_ratio(qtype) if (qtype in LEVELS or affine) else GENERIC_FACTOR
        return Scheme(qtype, "exact", block, affine, factor, FP16_CONSTANT)
    if ggml_encoder.available(qtype) is None:
        return Scheme(qtype, "ggml", block, affine, GENERIC_FACTOR, FP16_CONSTANT)
    return Scheme(qtype, "none", block, affine, 1.0, FP16_CONSTANT)


def no_reference_reason(qtype: str) -> str:
    """Why ``qtype`` has no reference encoder here."""
    return ggml_encoder.available(qtype) or "no reference encoder"


def library_scheme(label: str) -> Scheme:
    """A type whose reference is the very library that made the artifact (torchao, torch
    casts): the same code on the same tensor, so only float32 round-off is allowed."""
    return Scheme(label, "exact", 32, False, MARGIN, FLOAT_ROUNDOFF)


def _has_encoder(ggml: gguf.GGMLQuantizationType) -> bool:
    probe = np.zeros((1, gguf.GGML_QUANT_SIZES[ggml][0]), dtype=np.float32)
    try:
        gguf.quants.quantize(probe, ggml)
    except NotImplementedError:
        return False
    return True


# --------------------------------------------------------------------------- references


def encode(data: FloatArray, qtype: str) -> npt.NDArray[np.uint8] | None:
    """``data`` (rows of whole blocks, GGUF layout) encoded as ``qtype``'s raw bytes by the
    reference encoder, or None when ``qtype`` has none here."""
    kind = scheme(qtype).kind
    rows = np.ascontiguousarray(data, np.float32)
    if kind == "ggml":
        return ggml_encoder.encode(rows.reshape(-1, rows.shape[-1] if rows.ndim else 1), qtype)
    if kind != "exact":
        return None
    raw: np.ndarray = gguf.quants.quantize(rows, gguf.GGMLQuantizationType[qtype])
    return np.ascontiguousarray(raw).view(np.uint8)


def decode(raw: npt.NDArray[np.uint8], qtype: str, shape: tuple[int, ...]) -> FloatArray:
    """Raw ``qtype`` bytes back to float32 values of numpy ``shape`` (gguf.quants)."""
    ggml = gguf.GGMLQuantizationType[qtype]
    byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, ggml)
    values = gguf.quants.dequantize(np.ascontiguousarray(raw).reshape(byte_shape), ggml)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def reference(data: FloatArray, qtype: str) -> FloatArray | None:
    """``R``: ``data`` encoded and decoded as ``qtype`` (None when there is no encoder)."""
    raw = encode(data, qtype)
    return None if raw is None else decode(raw, qtype, data.shape)


def block_steps(blocks: FloatArray, qtype: str) -> tuple[FloatArray, FloatArray] | None:
    """Per block (rows of ``blocks``): the coarsest admissible step of ``qtype``'s grid and
    ``max|x|``; None for formats without a uniform per-block grid."""
    if qtype not in GRIDS:
        return None
    bits, affine = GRIDS[qtype]
    amax = np.abs(blocks).max(axis=1)
    if affine:
        step = (blocks.max(axis=1) - blocks.min(axis=1)) / (2**bits - 1)
    else:
        step = amax / (2 ** (bits - 1) - 1)
    return step.astype(np.float32), amax.astype(np.float32)


# --------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class Bounds:
    max_rel_error: float
    max_scale_dev: float
    max_bias_dev: float


def bounds(s: Scheme, ref_rel_error: float, n: int, n_blocks: int, offset: float,
           slack: float = 1.0) -> Bounds:
    """The three bounds of the module docstring for one tensor (times ``slack``)."""
    e, k, u = ref_rel_error, s.factor, s.precision
    return Bounds(
        max_rel_error=slack * (k * e + u),
        max_scale_dev=slack * ((k * e) ** 2 + u + SIGMAS * e / math.sqrt(max(n, 1))),
        max_bias_dev=slack * (SIGMAS * (e + u) / math.sqrt(max(n_blocks, 1)) + u * offset),
    )
