"""Bounds for the model at hand, made the first time a model x runtime x quantization is
judged: every calibrated statistic measured on its reference conversions
(:mod:`.reference`), the suite's rule applied (:mod:`.rules`), the result cached by content.

The population at a quantization is the recipe-matched llama.cpp conversion, the
type-matched one when the artifact under test stores other types, and, at float16 and
bfloat16, the transformers reference at that precision. The derived bounds are a result
of the result store (kind ``auto-bounds``), keyed by the reference conversions' keys
(the model's fingerprint, the recipe, the type map, the runtime's settings), the suite,
the version of its statistics and rule, and what the statistics are measured against
(the oracles, the evaluation text): made once under a lock, so concurrent pytest-xdist
workers wait for one another instead of converting twice.

Not calibrated automatically (the package defaults apply, and say so): random-weight
models (their own package calibration), the model the package defaults were calibrated
on when its artifact is the project's own conversion (the defaults are that very
calibration, at no cost), runtimes that do not run GGUF files, quantizations llama.cpp
has no recipe for, and machines without llama.cpp's converter (the reason says how to
get it).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from typing import Any

from pytest_groundtruth.context import Context
from pytest_groundtruth.context.engines import Engines
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.core.hashing import digest, file_sha256, text_sha256
from pytest_groundtruth.framework import reference
from pytest_groundtruth.framework.bounds import Calibration, package_file, random_weights
from pytest_groundtruth.oracle.format import oracle_path

VERSION = 1  # of the population and the cache entry
PRECISIONS = ("float16", "bfloat16")  # where the transformers reference joins the population

Found = tuple["dict[str, float] | None", str]
# per process and context (keyed by its engines): a case asks for several parameters
_memo: weakref.WeakKeyDictionary[Engines, dict[tuple[str, ...], Found]] = \
    weakref.WeakKeyDictionary()


def skipped(ctx: Context, calibration: Calibration, model: str, runtime: str, quant: str,
            force: bool = False) -> str | None:
    """Why the model at hand gets no automatic calibration here ("" : silently, the
    package default is this model's own calibration), or None when it does. ``force``
    (``groundtruth calibrate --model``): calibrate the package's own models too."""
    if not force and random_weights(ctx.settings, model):
        return ""
    supplied = ctx.settings.supplied_artifact(model, runtime, quant)
    if not force and supplied is None and package_file(calibration.file).model == model:
        return ""
    engine = ctx.engines.runtime(runtime)
    if engine.artifact_suffix(quant) != ".gguf":
        return f"runtime {runtime!r} does not run GGUF files, which the reference conversions are"
    if reference.recipe(quant) is None:
        return f"llama.cpp has no recipe for {quant!r}"
    return reference.unavailable(ctx)


def _inputs(ctx: Context, model: str) -> dict[str, Any]:
    """What the statistics are measured against: the oracles and the evaluation text."""
    root = ctx.settings.path(ctx.settings.oracle_dir)
    oracles = {}
    for name in ctx.inputs.prompts:
        path = oracle_path(root, model, name)
        oracles[name] = file_sha256(path) if path.is_file() else None
    return {"oracles": oracles, "text": text_sha256(ctx.inputs.eval_text[1])}


def population(ctx: Context, model: str, runtime: str, quant: str) -> list[reference.Reference]:
    """The correct conversions the bounds of this cell are calibrated on."""
    artifact = ctx.engines.artifact(model, runtime, quant)
    refs = reference.references(ctx, model, runtime, quant,
                                reference.tensor_types(artifact.path))
    if quant in PRECISIONS:
        # no transformers here, or no such precision: llama.cpp's references alone
        with contextlib.suppress(RuntimeUnavailable, ValueError):
            refs.append(reference.Reference(f"transformers at {quant}",
                                            ctx.engines.artifact(model, "transformers", quant)))
    return refs


def bounds(ctx: Context, suite: str, calibration: Calibration, model: str, runtime: str,
           quant: str, force: bool = False) -> Found:
    """(the bounds, how they were made) for ``suite`` on this cell, or (None, why not).
    ``force``: calibrate even where the package default is this model's own calibration."""
    memo = _memo.setdefault(ctx.engines, {})
    key = (suite, model, runtime, quant, str(force))
    if key in memo:
        return memo[key]
    why = skipped(ctx, calibration, model, runtime, quant, force)
    if why is not None:
        memo[key] = (None, why)
        return memo[key]
    started = time.perf_counter()
    refs = population(ctx, model, runtime, quant)
    labels = [r.label for r in refs]

    def make() -> dict[str, Any]:
        stats = [calibration.measure(ctx, r.artifact) for r in refs]
        return {"bounds": calibration.derive(stats, quant), "references": labels,
                "statistics": stats, "seconds": round(time.perf_counter() - started, 1)}

    def decode(data: dict[str, Any]) -> dict[str, Any]:
        return {"bounds": {str(k): float(v) for k, v in data["bounds"].items()},
                "references": [str(x) for x in data["references"]],
                "seconds": float(data["seconds"])}

    found = ctx.results.store.fetch(
        "auto-bounds", digest([r.artifact.key for r in refs]),
        [suite, calibration.version, VERSION, quant, _inputs(ctx, model)], make, decode)
    how = (f"calibrated on {len(refs)} correct reference conversion(s) of {model} run by "
           f"{runtime}: {'; '.join(found['references'])} ({calibration.rule}; made once in "
           f"{found['seconds']:.0f} s, cached by content)")
    memo[key] = (found["bounds"], how)
    return memo[key]
