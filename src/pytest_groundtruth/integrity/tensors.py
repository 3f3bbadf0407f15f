"""Compare one tensor with its source: running statistics and the verdict.

:class:`Accumulator` takes a tensor in row chunks (source ``S``, artifact ``A``,
reference ``R``, all float32 in the same layout) and keeps float64 sums, so a
vocabulary-sized embedding never needs more than a chunk of temporaries.
:func:`judge` applies the bounds of :mod:`.expected_error` to the resulting
:class:`~.findings.TensorStats`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from pytest_groundtruth.integrity.expected_error import (
    BLOCK_FACTOR,
    FP16_CONSTANT,
    MARGIN,
    Scheme,
    block_steps,
    bounds,
    scheme,
)
from pytest_groundtruth.integrity.findings import TensorFinding, TensorStats

FloatArray = npt.NDArray[np.float32]
CHUNK_VALUES = 1 << 20  # values per row chunk


def rows_per_chunk(row_length: int) -> int:
    return max(1, CHUNK_VALUES // max(row_length, 1))


class Accumulator:
    """Float64 sums over chunks of (S, A, R) from which :class:`TensorStats` follow."""

    def __init__(self, block: int = 1, affine: bool = False, qtype: str = "",
                 block_check: bool = False) -> None:
        self.block, self.affine, self.qtype = block, affine, qtype
        self.block_check = block_check  # compare each block's error with the reference's
        self.block_ratio: float | None = None
        self.step_ratio: float | None = None
        self.bad_blocks = 0
        self.first_bad_row: int | None = None
        self.n = 0
        self.n_blocks = 0
        self.sum_s = self.sum_ss = 0.0
        self.sum_e = self.sum_ee = self.sum_es = 0.0
        self.sum_r = self.sum_rr = self.sum_rs = 0.0
        self.sum_offset = 0.0
        self.nonfinite = 0
        self.identical = True
        self.has_reference = True

    def add(self, s: FloatArray, a: FloatArray | None, r: FloatArray | None,
            identical: bool = False, row: int = 0) -> None:
        """One chunk (starting at row ``row``). ``a`` None (or ``identical``) means "the same
        bytes as ``r``".

        Differences and products are float32 (exact or within 2^-24 of the value);
        every sum is accumulated in float64 (pairwise sums, float32 BLAS dots whose
        rounding is ~1e-9 of the sum of magnitudes on a 2^20-value chunk).
        """
        row_length = s.shape[-1] if s.ndim else 1
        s = np.ascontiguousarray(s, dtype=np.float32).ravel()
        self.n += s.size
        self.sum_s += float(np.sum(s, dtype=np.float64))
        self.sum_ss += float(np.dot(s, s))
        er = None
        if r is None:
            self.has_reference = False
            self.identical = False
        else:
            er = np.ascontiguousarray(r, dtype=np.float32).ravel() - s
            self.sum_r += float(np.sum(er, dtype=np.float64))
            self.sum_rr += float(np.dot(er, er))
            self.sum_rs += float(np.dot(er, s))
        if a is None or identical:
            if er is None:
                raise ValueError("an identical chunk needs its reference")
            self.sum_e += float(np.sum(er, dtype=np.float64))
            self.sum_ee += float(np.dot(er, er))
            self.sum_es += float(np.dot(er, s))
        else:
            self.identical = False
            values = np.ascontiguousarray(a, dtype=np.float32).ravel()
            finite = np.isfinite(values)
            if not finite.all():
                self.nonfinite += int((~finite).sum())
                values = np.where(finite, values, np.float32(0))
            ea = values - s
            self.sum_e += float(np.sum(ea, dtype=np.float64))
            self.sum_ee += float(np.dot(ea, ea))
            self.sum_es += float(np.dot(ea, s))
            self._steps(s, ea, row, row_length)
            if er is not None:
                self._block_errors(s, ea, er, row, row_length)
        if self.block > 1 and s.size % self.block == 0:
            blocks = s.reshape(-1, self.block)
            self.n_blocks += blocks.shape[0]
            if self.affine:
                self.sum_offset += float(
                    np.sum(np.abs(np.minimum(blocks.min(axis=1), 0)), dtype=np.float64))
        else:
            self.n_blocks += s.size

    def _steps(self, s: FloatArray, ea: FloatArray, row: int, row_length: int) -> None:
        """The per-block check: max |A - S| of each block in admissible steps."""
        if self.block <= 1 or s.size % self.block or row_length % self.block:
            return
        blocks = s.reshape(-1, self.block)
        found = block_steps(blocks, self.qtype)
        if found is None:
            return
        step, amax = found
        worst = np.abs(ea.reshape(-1, self.block)).max(axis=1)
        allowed = step + np.float32(FP16_CONSTANT) * amax
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(allowed > 0, worst / np.where(allowed > 0, allowed, 1),
                             np.where(worst > 0, np.inf, 0.0))
        top = float(ratio.max()) if ratio.size else 0.0
        self.step_ratio = top if self.step_ratio is None else max(self.step_ratio, top)
        bad = np.flatnonzero(ratio > MARGIN)
        self.bad_blocks += int(bad.size)
        if bad.size and self.first_bad_row is None:
            self.first_bad_row = row + int(bad[0] * self.block // row_length)

    def _block_errors(self, s: FloatArray, ea: FloatArray, er: FloatArray, row: int,
                      row_length: int) -> None:
        """The per-block check of K-quants and i-quants: each block's error against the
        reference encoding's error on the same block."""
        b = self.block
        if not self.block_check or b <= 1 or s.size % b or row_length % b:
            return

        def norms(x: FloatArray) -> npt.NDArray[np.float64]:
            blocks = x.reshape(-1, b).astype(np.float64)
            out: npt.NDArray[np.float64] = np.sqrt(np.einsum("ij,ij->i", blocks, blocks))
            return out

        got, ref, size = norms(ea), norms(er), norms(s)
        allowed = ref + FP16_CONSTANT * size
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(allowed > 0, got / np.where(allowed > 0, allowed, 1),
                             np.where(got > 0, np.inf, 0.0))
        top = float(ratio.max()) if ratio.size else 0.0
        self.block_ratio = top if self.block_ratio is None else max(self.block_ratio, top)
        bad = np.flatnonzero(ratio > BLOCK_FACTOR)
        self.bad_blocks += int(bad.size)
        if bad.size and self.first_bad_row is None:
            self.first_bad_row = row + int(bad[0] * b // row_length)

    def _fit(self, sum_e: float, sum_es: float) -> tuple[float, float]:
        """(scale, bias / rms(S)) of the least-squares fit ``S + E ~ scale * S + bias``."""
        n = max(self.n, 1)
        mean_s, mean_e = self.sum_s / n, sum_e / n
        mean_ss = self.sum_ss / n
        var_s = mean_ss - mean_s * mean_s
        if mean_ss <= 0:
            return 1.0, 0.0
        rms = math.sqrt(mean_ss)
        if var_s <= 1e-12 * mean_ss:  # a constant tensor: only the no-intercept scale
            return 1.0 + sum_es / self.sum_ss, 0.0
        scale = 1.0 + (sum_es / n - mean_e * mean_s) / var_s
        bias = (mean_s + mean_e - scale * mean_s) / rms
        return scale, bias

    def _rel(self, sum_sq: float) -> float:
        if self.sum_ss <= 0:
            return 0.0 if sum_sq == 0 else math.inf
        return math.sqrt(max(sum_sq, 0.0) / self.sum_ss)

    def stats(self, name: str, artifact_name: str, shape: tuple[int, ...], qtype: str,
              ref_kind: str) -> TensorStats:
        scale, bias = self._fit(self.sum_e, self.sum_es)
        ref_scale, ref_bias = self._fit(self.sum_r, self.sum_rs)
        n = max(self.n, 1)
        rms = math.sqrt(self.sum_ss / n) if self.sum_ss > 0 else 0.0
        offset = (self.sum_offset / max(self.n_blocks, 1) / rms if self.affine and rms
                  else (abs(self.sum_s / n) / rms if rms else 0.0))
        return TensorStats(
            name=name,
            artifact_name=artifact_name,
            shape=shape,
            qtype=qtype,
            n=self.n,
            n_blocks=self.n_blocks,
            rel_error=math.inf if self.nonfinite else self._rel(self.sum_ee),
            ref_rel_error=self._rel(self.sum_rr) if self.has_reference else None,
            ref_kind=ref_kind if self.has_reference else "none",
            identical=self.identical and self.has_reference and not self.nonfinite,
            scale=scale,
            ref_scale=ref_scale if self.has_reference else 1.0,
            bias=bias,
            ref_bias=ref_bias if self.has_reference else 0.0,
            offset=offset,
            nonfinite=self.nonfinite,
            step_ratio=self.step_ratio,
            bad_blocks=self.bad_blocks,
            first_bad_row=self.first_bad_row,
            block_ratio=self.block_ratio,
        )


def measure(s: FloatArray, a: FloatArray, r: FloatArray | None, *, name: str,
            artifact_name: str, qtype: str, scheme_: Scheme | None = None) -> TensorStats:
    """Statistics of whole arrays (``s``, ``a``, ``r`` of one shape) in one call."""
    sch = scheme_ or scheme(qtype)
    acc = Accumulator(sch.block, sch.affine, qtype)
    rows = s.reshape(-1, s.shape[-1]) if s.ndim else s.reshape(1, 1)
    a2 = a.reshape(rows.shape)
    r2 = None if r is None else r.reshape(rows.shape)
    step = rows_per_chunk(rows.shape[1])
    for i in range(0, rows.shape[0], step):
        ref = None if r2 is None else r2[i:i + step]
        got = a2[i:i + step]
        acc.add(rows[i:i + step], got, ref,
                identical=ref is not None and bool(np.array_equal(got, ref)), row=i)
    kind = sch.kind if r is not None else "none"
    return acc.stats(name, artifact_name, tuple(s.shape), qtype, kind)


def judge(stats: TensorStats, slack: float = 1.0, scheme_: Scheme | None = None
          ) -> TensorFinding:
    """The verdict on ``stats``: within the bounds of its declared type's scheme or not."""
    base = TensorFinding(name=stats.name, artifact_name=stats.artifact_name,
                         shape=stats.shape, qtype=stats.qtype, problem="",
                         rel_error=stats.rel_error, scale=stats.scale, bias=stats.bias,
                         ref_kind=stats.ref_kind, diagnosis=stats.diagnosis)
    if stats.nonfinite:
        return replace(base, problem=f"{stats.nonfinite} NaN/Inf value(s)")
    if stats.ref_rel_error is None:
        return base  # values not judged (no reference)
    sch = scheme_ or scheme(stats.qtype)
    b = bounds(sch, stats.ref_rel_error, stats.n, stats.n_blocks, stats.offset, slack)
    max_step = None if stats.step_ratio is None else MARGIN * slack
    max_block = None if stats.block_ratio is None else BLOCK_FACTOR * slack
    judged = replace(base, expected_rel_error=stats.ref_rel_error,
                     max_rel_error=b.max_rel_error, ref_scale=stats.ref_scale,
                     max_scale_dev=b.max_scale_dev, ref_bias=stats.ref_bias,
                     max_bias_dev=b.max_bias_dev, step_ratio=stats.step_ratio,
                     max_step_ratio=max_step, block_ratio=stats.block_ratio,
                     max_block_ratio=max_block)
    if stats.identical:
        return judged
    problems = []
    if stats.rel_error > b.max_rel_error:
        problems.append(f"error {stats.rel_error:.3g} > {b.max_rel_error:.3g}")
    scale_dev = stats.scale - stats.ref_scale
    if abs(scale_dev) > b.max_scale_dev:
        problems.append(f"scaled x{stats.scale:.6g} (reference x{stats.ref_scale:.6g}, "
                        f"allowed +-{b.max_scale_dev:.2g})")
    bias_dev = stats.bias - stats.ref_bias
    if abs(bias_dev) > b.max_bias_dev:
        problems.append(f"biased by {stats.bias:+.3g} rms (reference {stats.ref_bias:+.3g}, "
                        f"allowed +-{b.max_bias_dev:.2g})")
    if max_step is not None and stats.step_ratio is not None and stats.step_ratio > max_step:
        problems.append(f"{stats.bad_blocks} block(s) hold a value more than one step from "
                        f"the source (worst {stats.step_ratio:.3g} steps, first in row "
                        f"{stats.first_bad_row})")
    if max_block is not None and stats.block_ratio is not None and stats.block_ratio > max_block:
        problems.append(f"{stats.bad_blocks} block(s) of {sch.block} hold more than "
                        f"{max_block:.3g}x the reference encoding's error (worst "
                        f"{stats.block_ratio:.3g}x, first in row {stats.first_bad_row})")
    if problems and stats.diagnosis:
        # the diagnosis explains the numbers; the error says how far off it is
        problems = [stats.diagnosis, problems[0]]
    return replace(judged, problem="; ".join(problems))
