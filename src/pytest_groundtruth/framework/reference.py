"""Reference conversions: the model at hand, converted correctly by llama.cpp's own tools.

What a correct conversion of a model costs in agreement, perplexity and rescoring depends
on the model and on the types its tensors are stored in, so the bounds for an artifact
are calibrated on correct conversions of the same model at the same types:

* *recipe-matched*: llama.cpp's converter (``convert_hf_to_gguf.py``) at the
  quantization's outtype (F32, F16, Q8_0), then llama.cpp's quantizer for the other types
  (``int4`` = Q4_0, every :data:`~pytest_groundtruth.ggufio.quants.CATALOG` name);
* *type-matched*, when the artifact's file is a readable GGUF whose tensor types differ
  from the recipe's: the converter's F32 file quantized by llama.cpp's quantizer with
  every tensor at the artifact's type for it (``tt_overrides``: an all-Q4_0 file gets
  all-Q4_0 token embeddings too).

Each reference is an artifact of the artifact cache (built once, under its lock, keyed by
the model's fingerprint, the recipe and, type-matched, the type map) and is run by the
artifact's own runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.hashing import digest
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.ggufio import hfconvert
from pytest_groundtruth.ggufio import quantize as quantizer
from pytest_groundtruth.ggufio.names import GGUFFormatError
from pytest_groundtruth.ggufio.quants import CATALOG
from pytest_groundtruth.ggufio.reader import gguf_problem, scan_gguf
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.threads import default_threads
from pytest_groundtruth.store.artifacts import Recipe

VERSION = 1  # of the reference recipes: part of every reference's key
# The converter's outtype of each quantization it writes directly.
OUTTYPES = {"float32": "f32", "float16": "f16", "int8": "q8_0"}
ALIASES = {"int4": "q4_0"}  # a quantizer type under the original workflow's name


@dataclass(frozen=True)
class Reference:
    label: str  # "llama.cpp converter f32 + quantizer Q4_0 (recipe-matched)"
    artifact: Artifact


def recipe(quant: str) -> tuple[str, str | None] | None:
    """(converter outtype, quantizer type or None) for ``quant``; None: no llama.cpp recipe."""
    if quant in OUTTYPES:
        return OUTTYPES[quant], None
    name = ALIASES.get(quant, quant)
    return ("f32", name) if name in CATALOG else None


def tensor_types(path: Path) -> dict[str, str] | None:
    """Tensor name -> GGML type of a GGUF file (None when it is not a readable GGUF)."""
    if not path.is_file():
        return None
    try:
        return {name: t.type for name, t in scan_gguf(path).tensors.items()}
    except (GGUFFormatError, OSError, ValueError):
        return None


def unavailable(ctx: Context) -> str | None:
    """Why no reference conversion can be made here, or None."""
    return hfconvert.unavailable(ctx.settings.cache_root())


def _artifact(ctx: Context, model: str, runtime: str, quant: str, parts: dict[str, object],
              label: str, build_types: Mapping[str, str] | None) -> Reference:
    resolved = ctx.engines.model(model)
    engine = ctx.engines.runtime(runtime)
    found = recipe(quant)
    assert found is not None
    outtype, qtype = found
    cache = ctx.settings.cache_root()
    threads = default_threads()

    def build(out: Path) -> str:
        if qtype is None:
            return hfconvert.convert(resolved.path, outtype, out, cache)
        with TemporaryDirectory(prefix="gt-reference-", dir=out.parent) as tmp:
            f32 = Path(tmp) / "f32.gguf"
            first = hfconvert.convert(resolved.path, outtype, f32, cache)
            main = quantizer.main_quant(build_types) if build_types else qtype
            second = quantizer.quantize(f32, out, main or qtype, threads,
                                        pure=build_types is not None, tensor_types=build_types)
        return (f"{first.replace(str(f32), '<f32>')}\n"
                f"{second.replace(str(f32), '<f32>').replace(str(out), '<out>')}")

    made = ctx.engines.artifacts.get(Recipe(
        model, f"reference-{quant}", {"reference": VERSION, "model": resolved.fingerprint,
                                      **parts}, ".gguf", build, gguf_problem))
    key = digest({"reference": made.key, **engine.key_parts(quant)})
    artifact = Artifact(runtime, model, quant, made.path, key=f"reference-{key}",
                        recipe=made.recipe, external=True,
                        details={"sha256": made.sha256, "built_seconds": str(made.seconds)})
    return Reference(label, artifact)


def references(ctx: Context, model: str, runtime: str, quant: str,
               types: Mapping[str, str] | None = None) -> list[Reference]:
    """The reference conversions of ``model`` at ``quant`` run by ``runtime``: the
    recipe-matched one, and a type-matched one when ``types`` (the artifact's tensor types)
    differ from its types."""
    found = recipe(quant)
    if found is None:
        return []
    outtype, qtype = found
    engine = package_version("llama-cpp-python")
    what = (f"llama.cpp {engine} converter {outtype}"
            + (f" + quantizer {CATALOG[qtype].ftype}" if qtype else ""))
    parts: dict[str, object] = {"converter": engine, "outtype": outtype, "quantize": qtype}
    out = [_artifact(ctx, model, runtime, quant, parts, f"{what} (recipe-matched)", None)]
    if qtype is None or types is None:
        return out
    mine = tensor_types(out[0].artifact.path)
    if mine is None or dict(types) == mine or set(types) != set(mine):
        return out  # the same types, or another tensor set: the recipe is the match
    main = quantizer.main_quant(types) or qtype
    label = (f"llama.cpp {engine} converter f32 + quantizer {CATALOG[main].ftype} "
             f"with the artifact's type for each of its {len(types)} tensors (type-matched)")
    parts = {**parts, "types": digest(dict(sorted(types.items())))}
    out.append(_artifact(ctx, model, runtime, quant, parts, label, types))
    return out
