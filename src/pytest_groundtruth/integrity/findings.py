"""What the integrity checks report: small, frozen, JSON-friendly result types.

Every check is a pure function that returns these; :mod:`.report` turns them into the
suite's summary line, table and details. A check that cannot run for an artifact is a
:class:`Section` with status ``skipped`` and the reason, never silence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class MetadataFinding:
    """One metadata field: what the source model says and what the artifact says."""

    field: str  # human name: "rope theta"
    key: str  # where the artifact keeps it: "llama.rope.freq_base"
    expected: Any
    actual: Any
    source: str  # where ``expected`` came from: "config.json rope_parameters.rope_theta"
    ok: bool
    note: str = ""  # e.g. "absent: llama.cpp's default 10000.0"


@dataclass(frozen=True)
class TokenizerFinding:
    """One string the engine's tokenizer handles differently from the reference."""

    text: str
    # "encode", "decode", or "normalization": the ids differ only because the engine does
    # not apply the reference's Unicode normalizer (llama.cpp has none): reported, not failed
    problem: str
    expected_ids: tuple[int, ...]
    actual_ids: tuple[int, ...]
    expected_text: str = ""
    actual_text: str = ""

    @property
    def ok(self) -> bool:
        return self.problem == "normalization"

    @property
    def first_difference(self) -> int:
        pairs = zip(self.expected_ids, self.actual_ids, strict=False)
        return next((i for i, (a, b) in enumerate(pairs) if a != b),
                    min(len(self.expected_ids), len(self.actual_ids)))


@dataclass(frozen=True)
class TensorStats:
    """Measurements of one artifact tensor against its source tensor (no verdict yet).

    Errors are relative to the source tensor's norm: ``rel_error = |A - S| / |S|`` for
    the artifact ``A``, ``ref_rel_error = |R - S| / |S|`` for the reference ``R`` (the
    source quantized and dequantized with the artifact's declared type). ``scale`` and
    ``bias`` come from the least-squares fit ``A ~ scale * S + bias * rms(S)``; the
    ``ref_`` values are the same fit for ``R``.
    """

    name: str  # the source (transformers) name
    artifact_name: str  # the name inside the artifact (GGUF name, state_dict key)
    shape: tuple[int, ...]  # transformers layout
    qtype: str  # declared type in the artifact: Q4_0, F32, torchao Int8Tensor, ...
    n: int
    n_blocks: int
    rel_error: float
    ref_rel_error: float | None  # None: no reference quantizer for the type
    ref_kind: str  # "exact", "ggml" or "none" (see expected_error.Scheme)
    identical: bool  # the artifact holds exactly the reference encoding
    scale: float
    ref_scale: float
    bias: float
    ref_bias: float
    offset: float  # mean |block offset| / rms(S) (the bias bound's rounding term)
    nonfinite: int = 0
    diagnosis: str = ""  # what the values look like when they are wrong
    # the per-block check (uniform-grid formats, when the bytes differ from the reference):
    # the largest max|A - S| of a block in admissible steps, how many blocks exceed
    # 1.1 steps, and the first row holding one
    step_ratio: float | None = None
    bad_blocks: int = 0
    first_bad_row: int | None = None
    # the per-block check of the formats without a uniform grid (K-quants, i-quants): the
    # largest |A - S| of a block over |R - S| + u|S| of the same block (bad_blocks and
    # first_bad_row then count the blocks above expected_error.BLOCK_FACTOR)
    block_ratio: float | None = None


@dataclass(frozen=True)
class TensorFinding:
    """The verdict on one tensor (or a tensor that is missing, extra or mis-shaped)."""

    name: str
    artifact_name: str
    shape: tuple[int, ...]
    qtype: str
    problem: str  # "" when the tensor is consistent with its source
    rel_error: float | None = None
    expected_rel_error: float | None = None  # e_ref: what the declared type costs it
    max_rel_error: float | None = None
    scale: float | None = None
    ref_scale: float | None = None
    max_scale_dev: float | None = None
    bias: float | None = None
    ref_bias: float | None = None
    max_bias_dev: float | None = None
    ref_kind: str = ""
    step_ratio: float | None = None
    max_step_ratio: float | None = None
    diagnosis: str = ""  # what the tensor holds instead, when that was found
    block_ratio: float | None = None
    max_block_ratio: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def severity(self) -> float:
        """How far outside its bounds (1.0 = at a bound); structural problems: inf."""
        if not self.problem:
            return 0.0
        if self.rel_error is None or self.max_rel_error is None:
            return math.inf
        ratios = [_ratio(self.rel_error, self.max_rel_error)]
        for value, ref, bound in ((self.scale, self.ref_scale, self.max_scale_dev),
                                  (self.bias, self.ref_bias, self.max_bias_dev),
                                  (self.step_ratio, 0.0, self.max_step_ratio)):
            if value is not None and ref is not None and bound is not None:
                ratios.append(_ratio(abs(value - ref), bound))
        return max(ratios)


def _ratio(value: float, bound: float) -> float:
    if math.isnan(value):
        return math.inf
    if bound <= 0:
        return math.inf if value > 0 else 0.0
    return value / bound


@dataclass(frozen=True)
class Section:
    """One of the three checks (metadata, tokenizer, tensors) on one artifact."""

    name: str
    status: str  # passed / failed / skipped
    checked: int = 0  # fields, strings or tensors compared
    reason: str = ""  # why skipped; what was read
    findings: tuple[Any, ...] = ()  # metadata: every field; others: the failures
    notes: tuple[str, ...] = ()  # partial skips and remarks (never silent)

    @property
    def failures(self) -> tuple[Any, ...]:
        """The failing findings, in order of importance."""
        return tuple(f for f in self.findings if not getattr(f, "ok", False))


@dataclass(frozen=True)
class IntegrityReport:
    """All three sections for one artifact."""

    metadata: Section
    tokenizer: Section
    tensors: Section
    calls: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def sections(self) -> tuple[Section, Section, Section]:
        return (self.metadata, self.tokenizer, self.tensors)

    @property
    def passed(self) -> bool:
        return all(s.status != FAILED for s in self.sections)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and non-finite floats as plain JSON values."""
    if hasattr(value, "__dataclass_fields__"):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value
