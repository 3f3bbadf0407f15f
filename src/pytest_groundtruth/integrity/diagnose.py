"""Name what a wrong tensor looks like: whose values it holds, in which order, how scaled.

Run only on tensors that fail their bounds (a few per artifact), with the whole
artifact tensor and its source in GGUF layout. Each test asks whether the artifact
tensor matches a transformed source within the tensor's own error bound (x1.5):
NaN/zeros, the q/k RoPE permutation missing or doubled, transposed, sign-flipped, a
whole-tensor scale, another source tensor's values (a duplicated, dropped or swapped
layer), or the right rows in the wrong order (shuffled embedding rows).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_groundtruth.ggufio import names
from pytest_groundtruth.ggufio.names import HParams
from pytest_groundtruth.integrity.source import SourceTensors

FloatArray = npt.NDArray[np.float32]
MATCH_FACTOR = 1.5
_LAYER = re.compile(r"^(model\.layers|transformer\.h)\.(\d+)\.(.+)$")


def rel_diff(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    """``|a - b| / |b|`` in float64 (inf for different shapes)."""
    if a.shape != b.shape:
        return float("inf")
    b64 = b.astype(np.float64)
    norm = float(np.linalg.norm(b64))
    diff = float(np.linalg.norm(a.astype(np.float64) - b64))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))


def candidates(hf: str, source: SourceTensors, block_count: int) -> Iterator[str]:
    """Source tensors a misplaced tensor may hold: the same part of other layers (nearest
    first), then other parts of the same layer, then embedding <-> output."""
    match = _LAYER.match(hf)
    if match:
        prefix, layer, part = match.group(1), int(match.group(2)), match.group(3)
        others = sorted((j for j in range(block_count) if j != layer),
                        key=lambda j: (abs(j - layer), j))
        for j in others:
            yield f"{prefix}.{j}.{part}"
        same = f"{prefix}.{layer}."
        yield from (n for n in source.names if n.startswith(same) and n != hf)
    elif hf in ("lm_head.weight", *names_of_embeddings()):
        yield from (n for n in ("lm_head.weight", *names_of_embeddings()) if n != hf)


def names_of_embeddings() -> tuple[str, ...]:
    return ("model.embed_tokens.weight", "transformer.wte.weight")


def diagnose(hp: HParams, hf: str, artifact: FloatArray, source_g: FloatArray,
             source: SourceTensors, bound: float, gguf_layout: bool = True) -> str:
    """A short description of what ``artifact`` holds instead of ``source_g`` (the source
    tensor ``hf``, both in GGUF layout, or both in transformers layout when not
    ``gguf_layout``), or "" when nothing fits."""
    def layout(name: str, values: FloatArray) -> FloatArray:
        return names.to_gguf_layout(hp, name, values) if gguf_layout else values

    tol = MATCH_FACTOR * max(bound, 1e-6)

    def close(candidate: FloatArray) -> bool:
        return rel_diff(artifact, candidate) <= tol

    finite = np.isfinite(artifact)
    if not finite.all():
        return f"{int((~finite).sum())} NaN/Inf value(s)"
    if not np.any(artifact):
        return "all zeros"
    flat = artifact.ravel()
    if flat.size > 1 and np.all(flat == flat[0]) and not np.all(source_g == flat[0]):
        return f"every value is {float(flat[0]):g}"
    if gguf_layout and hp.layout.permute_qk and hf.endswith(
        ("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")
    ):
        source_hf = names.to_hf_layout(hp, hf, source_g)
        if close(source_hf):
            return ("rows in transformers' order: the q/k RoPE permutation "
                    "(convert_hf_to_gguf's LlamaModel.permute) was not applied")
        if close(names.to_gguf_layout(hp, hf, source_g)):
            return "the q/k RoPE permutation was applied twice"
    if gguf_layout and hf.endswith("norm.weight"):
        offset = np.float32(hp.layout.norm_offset or 1.0)
        if hp.layout.norm_offset and close(source_g - offset):
            return (f"the norm offset (+{offset:g}, {hp.layout.converter_class}) was not "
                    "applied")
        if close(source_g + offset):
            return (f"the norm offset (+{offset:g}) was applied twice" if hp.layout.norm_offset
                    else f"the source + {offset:g}: a norm offset (as Gemma's) that the "
                    f"layout rules of {hp.arch_name!r} do not have")
    if artifact.ndim == 2 and artifact.shape[0] == artifact.shape[1] and close(source_g.T):
        return "transposed"
    if close(-source_g):
        return "sign flipped"
    s64 = source_g.astype(np.float64).ravel()
    ss = float(s64 @ s64)
    if ss > 0:
        gain = float(artifact.astype(np.float64).ravel() @ s64) / ss
        if abs(gain - 1) > tol and close((source_g * gain).astype(np.float32)):
            return f"the source scaled by x{gain:.6g}"
    for other in candidates(hf, source, hp.block_count):
        resolved = source.resolve(other)
        if resolved is None or source.shape(resolved) != source.shape(source.resolve(hf) or hf):
            continue
        values = layout(other, source.load(resolved))
        if values.shape == artifact.shape and close(values):
            return f"holds the values of {other}"
    return rows_out_of_place(artifact, source_g, tol)


def rows_out_of_place(artifact: FloatArray, source_g: FloatArray, tol: float,
                      sample: int = 16) -> str:
    """'k of n rows hold another source row's values' when the wrong rows are source rows.

    Rows whose error exceeds the tolerance are "moved"; the nearest source row of up to
    ``sample`` of them is found by brute force (one matrix product). The tensor counts
    as permuted when every sampled moved row is, within ``tol``, another source row.
    """
    if artifact.ndim != 2 or artifact.shape != source_g.shape or artifact.shape[0] < 2:
        return ""
    source64 = source_g.astype(np.float64)
    s_norms = np.linalg.norm(source64, axis=1)
    row_err = np.linalg.norm(artifact.astype(np.float64) - source64, axis=1)
    moved = np.flatnonzero(row_err > tol * np.maximum(s_norms, 1e-30))
    if moved.size == 0:
        return ""
    picked = artifact[moved[:sample]].astype(np.float64)
    dist2 = (s_norms[:, None] ** 2 - 2 * source64 @ picked.T
             + (picked * picked).sum(axis=1)[None, :])
    dist2[moved[:sample], np.arange(picked.shape[0])] = np.inf  # not the row itself
    nearest = dist2.argmin(axis=0)  # then measured exactly (the expansion cancels)
    exact = np.linalg.norm(source64[nearest] - picked, axis=1)
    if not np.all(exact <= tol * np.linalg.norm(picked, axis=1)):
        return ""
    return (f"rows permuted: {moved.size} of {artifact.shape[0]} rows hold another "
            "source row's values")
