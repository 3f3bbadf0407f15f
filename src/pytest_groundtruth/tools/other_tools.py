"""Correct GGUF files made by other tools: the false-alarm half of ``groundtruth falsify``.

A suite that fails a correct file made by someone else's converter tells the user
nothing about their own. These are the files people actually use, each made by the
tool that makes them for everyone:

* llama.cpp's converter (``convert_hf_to_gguf.py`` from the sdist of the installed
  llama-cpp-python, as the project's tests obtain it) at F32 and Q8_0;
* llama.cpp's quantizer (``llama_model_quantize`` through llama-cpp-python) from that
  F32 file at Q4_0, Q4_K_M, Q5_K_M and Q6_K (token embeddings and mixes as llama.cpp
  chooses them), and an all-Q4_0 file (``--pure``: every 2-D tensor Q4_0, the token
  embeddings included: a recipe other converters use);
* the published file the model was read from (the embedded model's Q4_1 GGUF).

Each file is judged at the project quantization it stands for: its own name where the
runtime offers one (``q4_k_m`` and the other GGUF type names, with their own calibrated
bounds), else the quantization of the same bit width (F32 -> float32, Q8_0 -> int8,
the 4-bit and wider K-quants -> int4, whose bounds are the looser ones). Files are
cached under ``<cache>/other-tools/``, written atomically; a tool that is not at hand
makes its rows say why instead of failing the run.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.core.atomic import atomic_path, locked
from pytest_groundtruth.models.sources import ResolvedModel

# GGUF type -> (llama.cpp ftype name, the project quantization it stands for when the
# runtime has no quantization of that name)
QUANTIZER_TYPES = {
    "Q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", "int4"),
    "Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", "int4"),
    "Q5_K_M": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", "int4"),
    "Q6_K": ("LLAMA_FTYPE_MOSTLY_Q6_K", "int4"),
}
# every 2-D tensor at the type (llama-quantize --pure), judged at int4
PURE_TYPES = {"Q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", "int4")}
CONVERTER_TYPES = {"F32": ("f32", "float32"), "Q8_0": ("q8_0", "int8")}


@dataclass(frozen=True)
class OtherFile:
    label: str  # e.g. "llama.cpp quantizer Q4_K_M"
    gguf_type: str
    quant: str  # the project quantization it is judged at
    path: Path | None  # None: not available here
    recipe: str  # how it was made, or why it is not available


def sdist_path(cache_dir: Path) -> Path | None:
    """The llama-cpp-python sdist matching the installed wheel, where one is at hand
    (``$GROUNDTRUTH_LLAMACPP_SDIST`` or ``<cache>/sdist/llama_cpp_python-<version>.tar.gz``)."""
    explicit = os.environ.get("GROUNDTRUTH_LLAMACPP_SDIST")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = cache_dir / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    return path if path.is_file() else None


def converter_script(cache_dir: Path) -> Path | None:
    """llama.cpp's ``convert_hf_to_gguf.py`` extracted from the sdist (once), or None."""
    sdist = sdist_path(cache_dir)
    if sdist is None:
        return None
    root = cache_dir / "other-tools" / f"convert-{sdist.stem}"
    with locked(root):
        if not root.is_dir():
            with atomic_path(root) as tmp, tarfile.open(sdist) as tar:
                parts = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
                members = [m for m in tar.getmembers()
                           if any(f"/vendor/llama.cpp/{p}" in m.name for p in parts)]
                tar.extractall(tmp, members=members, filter="data")
    found = sorted(root.glob("*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    return found[0] if found else None


def _convert(script: Path, model: Path, outtype: str, out: Path) -> str:
    command = [sys.executable, str(script), str(model), "--outtype", outtype, "--outfile"]
    with locked(out):
        if not out.is_file():
            with atomic_path(out) as tmp:
                done = subprocess.run([*command, str(tmp)], capture_output=True, text=True,
                                      timeout=1800, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(command)} {out} exited {done.returncode}:\n"
                                       f"{done.stderr[-3000:]}")
    return " ".join([*command, str(out)])


def _quantize(source: Path, ftype: str, out: Path, pure: bool = False) -> str:
    import llama_cpp

    with locked(out):
        if not out.is_file():
            with atomic_path(out) as tmp:
                params = llama_cpp.llama_model_quantize_default_params()
                params.ftype = getattr(llama_cpp, ftype)
                params.pure = pure
                code = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(),
                                                      params)
                if code != 0:
                    raise RuntimeError(f"llama_model_quantize({source}, {ftype}) returned {code}")
    return (f"llama_cpp.llama_model_quantize({str(source)!r}, <out>, ftype={ftype}"
            f"{', pure=True' if pure else ''})")


def correct_files(cache_dir: Path, model: ResolvedModel,
                  offered: Sequence[str]) -> list[OtherFile]:
    """The other tools' correct files of ``model`` (built once), each with the project
    quantization it is judged at (its own name when the runtime ``offered`` it)."""
    out: list[OtherFile] = []
    folder = cache_dir / "other-tools" / f"{model.slug}-{model.fingerprint[:16]}"
    folder.mkdir(parents=True, exist_ok=True)

    def judged(gguf_type: str, fallback: str) -> str:
        return gguf_type.lower() if gguf_type.lower() in offered else fallback

    script = converter_script(cache_dir)
    f32: Path | None = None
    for gguf_type, (outtype, quant) in CONVERTER_TYPES.items():
        label = f"llama.cpp converter {gguf_type}"
        if script is None:
            out.append(OtherFile(label, gguf_type, quant, None,
                                 "llama.cpp's convert_hf_to_gguf.py is not at hand (the "
                                 "llama-cpp-python sdist: `nox -s tests` downloads it)"))
            continue
        path = folder / f"convert-{outtype}.gguf"
        recipe = _convert(script, model.path, outtype, path)
        out.append(OtherFile(label, gguf_type, judged(gguf_type, quant), path, recipe))
        f32 = path if gguf_type == "F32" else f32
    for gguf_type, (ftype, quant) in QUANTIZER_TYPES.items():
        label = f"llama.cpp quantizer {gguf_type}"
        if f32 is None:
            out.append(OtherFile(label, gguf_type, quant, None,
                                 "needs llama.cpp's F32 conversion, which is not at hand"))
            continue
        path = folder / f"quantize-{gguf_type.lower()}.gguf"
        recipe = _quantize(f32, ftype, path)
        out.append(OtherFile(label, gguf_type, judged(gguf_type, quant), path,
                             f"{recipe} from {f32.name}"))
    for gguf_type, (ftype, quant) in PURE_TYPES.items():
        label = f"llama.cpp quantizer all-{gguf_type} (--pure)"
        if f32 is None:
            out.append(OtherFile(label, gguf_type, quant, None,
                                 "needs llama.cpp's F32 conversion, which is not at hand"))
            continue
        path = folder / f"quantize-{gguf_type.lower()}-pure.gguf"
        recipe = _quantize(f32, ftype, path, pure=True)
        out.append(OtherFile(label, gguf_type, quant, path, f"{recipe} from {f32.name}"))
    if model.gguf_file is not None:
        gguf_type = model.gguf_file.stem.rsplit(".", 1)[-1].upper()
        quant = gguf_type.lower() if gguf_type.lower() in offered else "int4"
        out.append(OtherFile(f"published {model.gguf_file.name}", gguf_type, quant,
                             model.gguf_file, f"the file {model.spec.source} ships"))
    return out
