"""``groundtruth calibrate --model X``: the model's own bounds, written beside its oracles.

For every configured runtime that runs GGUF files and every configured quantization it
offers, every calibrated suite's bounds are derived from the model's reference
conversions (:mod:`pytest_groundtruth.framework.auto`: llama.cpp's converter and
quantizer, recipe-matched, and type-matched to a configured ``[[artifacts]]`` file), and
written to ``<oracle_dir>/<model>/bounds.json`` (atomically) so that a team commits them
(each entry names the artifact it was matched to: the project's own conversion, or a
supplied file by its SHA-256, and applies to that artifact only):
from then on the suites apply them before any automatic or package default, and each
failure names the file. The same computation runs automatically, cached, when no file
is committed; this command makes it once, on purpose, and prints what it measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.atomic import atomic_write_text
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.core.hashing import file_sha256
from pytest_groundtruth.framework import auto
from pytest_groundtruth.framework.bounds import BUILT, Table, model_document, model_file
from pytest_groundtruth.suites.matrix import configured_suites
from pytest_groundtruth.suites.spec import get_suite


@dataclass
class ModelCalibration:
    model: str
    fingerprint: str
    suites: dict[str, Table] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)  # "<runtime>:<quant>" -> how
    artifacts: dict[str, str] = field(default_factory=dict)  # "<runtime>:<quant>" -> matched to
    skipped: list[str] = field(default_factory=list)  # cells without bounds, and why
    seconds: float = 0.0


def calibrate_model(ctx: Context, model: str) -> ModelCalibration:
    """Every calibrated suite's bounds for ``model`` on the configured GGUF cells."""
    started = time.perf_counter()
    settings = ctx.settings
    found = ModelCalibration(model, ctx.engines.model(model).fingerprint)
    calibrated = [get_suite(n) for n in configured_suites(settings)
                  if get_suite(n).calibration is not None]
    for runtime in settings.runtimes:
        try:
            offered = ctx.engines.runtime(runtime).quantizations
        except RuntimeUnavailable as exc:
            found.skipped.append(f"{runtime}: {exc}")
            continue
        for quant in (q for q in settings.quantizations if q in offered):
            key = f"{runtime}:{quant}"
            supplied = settings.supplied_artifact(model, runtime, quant)
            found.artifacts[key] = BUILT if supplied is None else file_sha256(supplied)
            for suite in calibrated:
                assert suite.calibration is not None
                bounds, how = auto.bounds(ctx, suite.name, suite.calibration, model, runtime,
                                          quant, force=True)
                if bounds is None:
                    found.skipped.append(f"{key} {suite.name}: {how or 'not calibrated'}")
                    continue
                found.suites.setdefault(suite.name, {})[key] = bounds
                found.references[key] = how.rsplit(f" ({suite.calibration.rule};", 1)[0]
    found.seconds = time.perf_counter() - started
    return found


def write(ctx: Context, found: ModelCalibration) -> Path:
    path = model_file(ctx.settings, found.model)
    atomic_write_text(path, model_document(found.model, found.fingerprint, found.suites,
                                           found.references, found.artifacts))
    return path


def render(found: ModelCalibration) -> str:
    lines = [f"Bounds for {found.model} from its reference conversions "
             f"({found.seconds:.0f} s):", "",
             "| suite | runtime:quantization | bounds |", "|---|---|---|"]
    for suite, table in found.suites.items():
        for key, bounds in table.items():
            shown = ", ".join(f"{k} {v:g}" for k, v in bounds.items())
            lines.append(f"| {suite} | {key} | {shown} |")
    lines += ["", "Reference conversions:", ""]
    lines += [f"- {key}: {how}" for key, how in found.references.items()]
    if found.skipped:
        lines += ["", "Not calibrated:", ""] + [f"- {s}" for s in found.skipped]
    return "\n".join(lines) + "\n"
