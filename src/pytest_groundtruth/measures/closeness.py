"""How close two arrays of logits are, by PEFT's rule: ``|a - b| <= atol + rtol * |b|``.

PEFT's merge tests compare the logits of an unmerged and a merged model with
``torch.allclose(a, b, atol=1e-4, rtol=1e-4)``; :func:`closeness` applies the same rule
and says where the largest difference is, so a failure names the position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True)
class Closeness:
    max_abs: float  # the largest |a - b|
    position: int  # the row (sequence position) where it is
    within: bool  # every element satisfies |a - b| <= atol + rtol * |b|
    worst_ratio: float  # max |a - b| / (atol + rtol * |b|): <= 1 when within


def closeness(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating], atol: float,
              rtol: float) -> Closeness:
    """Compare ``a`` with the reference ``b`` (same shape, rows = positions)."""
    import numpy as np

    if a.shape != b.shape:
        raise ValueError(f"cannot compare logits of shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("logits contain NaN or Inf")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    ratio = diff / (atol + rtol * np.abs(b.astype(np.float64)))
    flat = int(np.argmax(diff))
    position = flat // int(np.prod(a.shape[1:])) if a.ndim > 1 else flat
    worst = float(ratio.max()) if ratio.size else 0.0
    return Closeness(float(diff.max()) if diff.size else 0.0, position, worst <= 1.0, worst)
