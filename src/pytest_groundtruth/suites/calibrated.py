"""Calibrated default bounds: what ``groundtruth calibrate`` wrote into the package.

``data/agreement_bounds.json`` and ``data/ppl_bounds.json`` hold, per quantization, the
bounds measured on correct conversions of the embedded model (``bounds``, ``max_ratio``)
and of the tiny random-weight models (``random_bounds``, ``random_max_ratio``;
docs/calibration.md says why those differ). :func:`bound` is a suite's bound for a case:
a configured rule first, then the random-weight models' calibration for a ``tiny:``
model, then the suite's default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_groundtruth.config.settings import Bound
from pytest_groundtruth.context import Context
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import bound_of

DATA = Path(__file__).parents[1] / "data"
AGREEMENT_FILE = DATA / "agreement_bounds.json"
PPL_FILE = DATA / "ppl_bounds.json"
RANDOM_SCHEME = "tiny"  # sources of random-weight models


def read(path: Path) -> dict[str, Any]:
    """A calibration file (empty before `groundtruth calibrate` first wrote it)."""
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


DERIVED_SCHEMES = ("truncate", "lora")  # built from a base roster model (BASE[:...])


def random_weights(ctx: Context, model: str) -> bool:
    """Whether ``model`` is a random-weight model: a ``tiny:`` source, or a draft or merged
    adapter built on one (``truncate:tiny-llama``, ``lora:tiny-llama``)."""
    roster, seen = ctx.settings.roster, set()
    spec = ctx.settings.spec(model)
    while spec.scheme in DERIVED_SCHEMES and spec.slug not in seen:
        seen.add(spec.slug)
        base = roster.get(spec.location.split(":", 1)[0])
        if base is None:
            return False
        spec = base
    return spec.scheme == RANDOM_SCHEME


def bound(ctx: Context, case: Case, param: str,
          random: Mapping[str, Mapping[str, float] | float]) -> Bound:
    """The case's bound on ``param``; ``random``: the random-weight calibration, per
    quantization (``*`` for the others), used for ``tiny:`` models unless a rule says."""
    found = bound_of(ctx, case, param)
    if found.origin != "default" or not random or not random_weights(ctx, case.model):
        return found
    entry = random.get(case.quant, random.get("*"))
    value = entry.get(param) if isinstance(entry, Mapping) else entry
    if value is None:
        return found
    return Bound(value, "calibrated on the tiny random-weight models (docs/calibration.md)")
