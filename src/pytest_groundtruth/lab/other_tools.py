"""Correct GGUF files made by other tools: the false-alarm half of ``groundtruth falsify``.

A suite that fails a correct file made by someone else's converter tells the user
nothing about their own. These are the files people actually use, each made by the
tool that makes them for everyone:

* llama.cpp's converter (``convert_hf_to_gguf.py`` from the sdist of the installed
  llama-cpp-python, :mod:`~pytest_groundtruth.ggufio.hfconvert`) at F32 and Q8_0;
* llama.cpp's quantizer (``llama_model_quantize`` through llama-cpp-python in a child
  process, :mod:`~pytest_groundtruth.ggufio.quantize`) from that F32 file at Q4_0,
  Q4_K_M, Q5_K_M and Q6_K (token embeddings and mixes as llama.cpp chooses them), and an
  all-Q4_0 file (``--pure``: every 2-D tensor Q4_0, the token embeddings included: a
  recipe other converters use);
* the published file the model was read from (the embedded model's Q4_1 GGUF).

Each file is judged at the project quantization it stands for: its own name where the
runtime offers one (``q4_k_m`` and the other GGUF type names, with their own calibrated
bounds), else the quantization of the same bit width (F32 -> float32, Q8_0 -> int8,
the 4-bit and wider K-quants -> int4, whose bounds are the looser ones). Files are
cached under ``<cache>/other-tools/``, written atomically; a tool that is not at hand
makes its rows say why instead of failing the run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.core.atomic import atomic_path, locked
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.core.usage import touch
from pytest_groundtruth.ggufio import hfconvert
from pytest_groundtruth.ggufio import quantize as quantizer
from pytest_groundtruth.models.sources import ResolvedModel

# GGUF type (a llama.cpp quantizer type, ggufio/quantize.py) -> the project quantization
# it stands for when the runtime has no quantization of that name
QUANTIZER_TYPES = {"Q4_0": "int4", "Q4_K_M": "int4", "Q5_K_M": "int4", "Q6_K": "int4"}
# every 2-D tensor at the type (llama-quantize --pure), judged at int4
PURE_TYPES = {"Q4_0": "int4"}
CONVERTER_TYPES = {"F32": ("f32", "float32"), "Q8_0": ("q8_0", "int8")}


@dataclass(frozen=True)
class OtherFile:
    label: str  # e.g. "llama.cpp quantizer Q4_K_M"
    gguf_type: str
    quant: str  # the project quantization it is judged at
    path: Path | None  # None: not available here
    recipe: str  # how it was made, or why it is not available
    width: str = ""  # the project quantization of the same bit width (float32, int8, int4)

    def __post_init__(self) -> None:
        if not self.width:
            object.__setattr__(self, "width", self.quant)


def _convert(cache_dir: Path, model: Path, outtype: str, out: Path) -> str:
    """llama.cpp's converter (:mod:`~pytest_groundtruth.ggufio.hfconvert`) to ``out``, once."""
    with locked(out):
        if not out.is_file():
            with atomic_path(out) as tmp:
                hfconvert.convert(model, outtype, tmp, cache_dir)
    return hfconvert.convert_call(model, outtype, out, cache_dir)


def _quantize(source: Path, gguf_type: str, out: Path, pure: bool = False) -> str:
    """llama.cpp's quantizer (:mod:`~pytest_groundtruth.ggufio.quantize`, a child process)
    from ``source`` to ``out``, once; ``pure``: every 2-D tensor at the type."""
    with locked(out):
        if not out.is_file():
            with atomic_path(out) as tmp:
                quantizer.quantize(source, tmp, gguf_type.lower(), pure=pure)
    return quantizer.quantize_call(source, out, gguf_type.lower(), pure=pure)


def published_type(name: str) -> str:
    """The GGUF type a published file's name ends with (``...Instruct.Q4_1.gguf`` ->
    ``Q4_1``, ``gemma-3-270m-q4_k_m.gguf`` -> ``Q4_K_M``); ``?`` when it names none."""
    found = re.search(r"(?i)(?:^|[.\-_])(i?q\d(?:_k)?(?:_[0-9a-z]{1,2})?|bf16|f16|f32)\.gguf$",
                      name)
    return found.group(1).upper() if found else "?"


def _width(gguf_type: str) -> str:
    """The project quantization of a GGUF type's bit width (a published file's type)."""
    if gguf_type in ("F32", "F16", "BF16"):
        return "float32"
    return "int8" if gguf_type.startswith("Q8") else "int4"


def correct_files(cache_dir: Path, model: ResolvedModel, offered: Sequence[str],
                  keep: Callable[[str, str], bool] | None = None) -> list[OtherFile]:
    """The other tools' correct files of ``model`` (built once), each with the project
    quantization it is judged at (its own name when the runtime ``offered`` it).
    ``keep(gguf_type, width)``: only the files it keeps are listed and built (the F32
    conversion also when a quantizer file needs it)."""
    files = _correct_files(cache_dir, model, offered, keep or (lambda _t, _w: True))
    return [f for f in files if keep is None or keep(f.gguf_type, f.width)]


def _correct_files(cache_dir: Path, model: ResolvedModel, offered: Sequence[str],
                   keep: Callable[[str, str], bool]) -> list[OtherFile]:
    out: list[OtherFile] = []
    # The files are llama.cpp's output (its converter and quantizer ship in
    # llama-cpp-python): another version makes them again, beside these.
    engine = package_version("llama-cpp-python") or "none"
    folder = cache_dir / "other-tools" / f"{model.slug}-{model.fingerprint[:16]}-{engine}"
    folder.mkdir(parents=True, exist_ok=True)
    touch(folder)

    def judged(gguf_type: str, fallback: str) -> str:
        return gguf_type.lower() if gguf_type.lower() in offered else fallback

    missing = hfconvert.unavailable(cache_dir)
    f32: Path | None = None
    quantized = any(keep(t, q) for t, q in (*QUANTIZER_TYPES.items(), *PURE_TYPES.items()))
    for gguf_type, (outtype, quant) in CONVERTER_TYPES.items():
        label = f"llama.cpp converter {gguf_type}"
        if not keep(gguf_type, quant) and not (gguf_type == "F32" and quantized):
            continue
        if missing:
            out.append(OtherFile(label, gguf_type, quant, None, missing, quant))
            continue
        path = folder / f"convert-{outtype}.gguf"
        recipe = _convert(cache_dir, model.path, outtype, path)
        out.append(OtherFile(label, gguf_type, judged(gguf_type, quant), path, recipe, quant))
        f32 = path if gguf_type == "F32" else f32
    for gguf_type, quant in QUANTIZER_TYPES.items():
        label = f"llama.cpp quantizer {gguf_type}"
        if not keep(gguf_type, quant):
            continue
        if f32 is None:
            out.append(OtherFile(label, gguf_type, quant, None,
                                 "needs llama.cpp's F32 conversion, which is not at hand", quant))
            continue
        path = folder / f"quantize-{gguf_type.lower()}.gguf"
        recipe = _quantize(f32, gguf_type, path)
        out.append(OtherFile(label, gguf_type, judged(gguf_type, quant), path,
                             f"{recipe} from {f32.name}", quant))
    for gguf_type, quant in PURE_TYPES.items():
        label = f"llama.cpp quantizer all-{gguf_type} (--pure)"
        if not keep(gguf_type, quant):
            continue
        if f32 is None:
            out.append(OtherFile(label, gguf_type, quant, None,
                                 "needs llama.cpp's F32 conversion, which is not at hand", quant))
            continue
        path = folder / f"quantize-{gguf_type.lower()}-pure.gguf"
        recipe = _quantize(f32, gguf_type, path, pure=True)
        out.append(OtherFile(label, gguf_type, quant, path, f"{recipe} from {f32.name}", quant))
    if model.gguf_file is not None:
        gguf_type = published_type(model.gguf_file.name)
        quant = gguf_type.lower() if gguf_type.lower() in offered else "int4"
        out.append(OtherFile(f"published {model.gguf_file.name}", gguf_type, quant,
                             model.gguf_file, f"the file {model.spec.source} ships",
                             _width(gguf_type)))
    return out
