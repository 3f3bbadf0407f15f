"""The llama.cpp toolchain: a model to a GGUF of any type, and a GGUF back to one.

One :class:`Toolchain` builds every GGUF artifact the package makes from a float32 model,
whichever runtime then runs it (the in-process llama.cpp runtime, a served
llama-cpp-python): ``float32``, ``float16``, ``int8`` (Q8_0) and ``int4`` (Q4_0) come
from a converter directly (:data:`QTYPES`); every type of llama.cpp's quantizer
(:data:`~pytest_groundtruth.ggufio.quants.CATALOG`) is made by
:func:`~pytest_groundtruth.ggufio.quantize.quantize` from the converter's F32 file, so
its tensor mix is llama.cpp's own.

The converter (``converter``): ``"ours"``
(:func:`~pytest_groundtruth.ggufio.writer.export_gguf`, the architectures of
:data:`~pytest_groundtruth.ggufio.names.EXPORTED`), ``"llama.cpp"`` (llama.cpp's own
``convert_hf_to_gguf.py``, :mod:`~pytest_groundtruth.ggufio.hfconvert`), or ``"auto"``:
ours where it writes the architecture, llama.cpp's otherwise.

:meth:`Toolchain.reimport` reads a GGUF through transformers' GGUF loader (dequantizing)
and exports it again with our exporter, every tensor at its own type in the original
(``like=``): the roundtrip GGUF -> HF -> GGUF keeps a mixed file mixed.
"""

from __future__ import annotations

import importlib.metadata
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.ggufio import hfconvert, names
from pytest_groundtruth.ggufio import quantize as quantizer
from pytest_groundtruth.ggufio.names import GGUFExportError
from pytest_groundtruth.ggufio.quants import CATALOG, GGUF_TYPES
from pytest_groundtruth.ggufio.reader import gguf_problem, scan_gguf
from pytest_groundtruth.ggufio.writer import EXPORTER_VERSION, export_gguf
from pytest_groundtruth.models.sources import ResolvedModel, gguf_to_hf_dir

# The quantization names a converter writes directly -> the GGUF type (and the outtype
# of llama.cpp's converter); every other name is llama.cpp's quantizer's (CATALOG).
QTYPES = {q: GGUF_TYPES[q] for q in ("float32", "float16", "int8", "int4")}
HF_OUTTYPES = {q: QTYPES[q].lower() for q in ("float32", "float16", "int8")}
CONVERTERS = ("auto", "ours", "llama.cpp")
QUANTIZATIONS = (*QTYPES, *CATALOG)


def tokens_beyond_vocabulary(model_dir: Path) -> list[str]:
    """Added tokens of ``model_dir``'s tokenizer.json whose ids lie beyond config.json's
    vocab_size (``'<mask>' (49152)``), which no GGUF of that model can hold."""
    try:
        vocab = json.loads((model_dir / "config.json").read_text()).get("vocab_size")
        added = json.loads((model_dir / "tokenizer.json").read_text()).get("added_tokens", [])
    except (OSError, ValueError):
        return []
    if not isinstance(vocab, int):
        return []
    return [f"{t.get('content')!r} ({t.get('id')})" for t in added
            if isinstance(t, dict) and isinstance(t.get("id"), int) and t["id"] >= vocab]


@dataclass(frozen=True)
class Toolchain:
    """``converter``: ``auto``, ``ours`` or ``llama.cpp``; ``n_threads``: the quantizer's
    threads; ``cache_dir``: where llama.cpp's converter is looked for and unpacked."""

    converter: str = "auto"
    n_threads: int = 2
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.converter not in CONVERTERS:
            raise ValueError(f"converter must be one of {CONVERTERS}, got {self.converter!r}")

    def unavailable(self) -> str | None:
        """Why the chosen converter cannot run here, or None."""
        return hfconvert.unavailable(self.cache_dir) if self.converter == "llama.cpp" else None

    def describe(self, engine: str) -> str:
        """The toolchain in a runtime's version string (``engine``: llama.cpp's version)."""
        return (f"converter {self.converter} (ggufio exporter {EXPORTER_VERSION}, llama.cpp "
                f"convert_hf_to_gguf.py {engine})")

    def qtype(self, quant: str) -> str:
        """The GGUF file type of ``quant`` (``Q4_K_M`` for a mix)."""
        return QTYPES.get(quant) or CATALOG[quant].ftype

    def converter_for(self, model: ResolvedModel) -> str:
        """``ours`` or ``llama.cpp``: the converter that makes ``model``'s artifacts."""
        if self.converter != "auto":
            return self.converter
        model_type = names.read_config(model.path).get("model_type")
        return "ours" if model_type in names.EXPORTED else "llama.cpp"

    def tokenizer_pre(self, model: ResolvedModel) -> str:
        """``tokenizer.ggml.pre`` for our exporter: the roster's (or, once resolved, the
        GGUF source's own or the tiny builder's), else the one llama.cpp's converter would
        pick for the tokenizer."""
        if model.spec.tokenizer_pre:
            return model.spec.tokenizer_pre
        found = hfconvert.tokenizer_pre(model.path, self.cache_dir)
        if found is None:
            raise GGUFExportError(
                f"model {model.slug!r}: llama.cpp's converter does not recognize its "
                "pre-tokenizer; set tokenizer_pre in [tool.groundtruth.roster."
                f"{model.slug}] (llama.cpp's name, e.g. 'llama-bpe')")
        return found

    def convert(self, model: ResolvedModel, quant: str, out: Path) -> str:
        """``model`` as a ``quant`` (float32, float16, int8 or int4) GGUF at ``out``."""
        if self.converter_for(model) == "ours":
            qtype, pre = QTYPES[quant], self.tokenizer_pre(model)
            export_gguf(model.path, out, qtype, pre)
            return (f"pytest_groundtruth.ggufio.export_gguf({str(model.path)!r}, <out>, "
                    f"{qtype!r}, tokenizer_pre={pre!r})  # exporter v{EXPORTER_VERSION}")
        if quant in HF_OUTTYPES:
            return hfconvert.convert(model.path, HF_OUTTYPES[quant], out, self.cache_dir)
        with tempfile.TemporaryDirectory(prefix="gt-hfconv-", dir=out.parent) as tmp:
            f32 = Path(tmp) / "f32.gguf"
            first = hfconvert.convert(model.path, "f32", f32, self.cache_dir)
            second = quantizer.quantize(f32, out, "q4_0", self.n_threads)
        first = first.replace(str(f32), "<f32>")
        return f"{first}\n{second.replace(str(f32), '<f32>').replace(str(out), '<out>')}"

    def build(self, model: ResolvedModel, quant: str, out: Path) -> str:
        """``model`` as a ``quant`` GGUF at ``out`` (a converter's type, or the quantizer's
        from the converter's F32 file); the recipe."""
        if quant in QTYPES:
            return self.convert(model, quant, out)
        with tempfile.TemporaryDirectory(prefix="gt-quantize-", dir=out.parent) as tmp:
            f32 = Path(tmp) / "f32.gguf"
            first = self.convert(model, "float32", f32)
            second = quantizer.quantize(f32, out, quant, self.n_threads)
        first = first.replace(str(f32), "<f32>").replace("<out>", "<f32>")
        second = second.replace(str(f32), "<f32>").replace(str(out), "<out>")
        return f"{first}\n{second}"

    def validate(self, artifact_path: Path) -> str | None:
        return gguf_problem(artifact_path)

    def reimport(self, gguf: Path, model: ResolvedModel, quant: str, out: Path) -> str:
        """``gguf`` through transformers' GGUF loader and back through our exporter, each
        tensor at its type in the original; the recipe."""
        config = names.read_config(model.path)
        if config.get("model_type") not in names.EXPORTED:
            raise RuntimeUnavailable(
                f"the roundtrip rewrites the reimported model with our GGUF exporter, which "
                f"writes {', '.join(names.EXPORTED)}, not {config.get('model_type')!r}")
        pre = scan_gguf(gguf).scalars.get("tokenizer.ggml.pre")
        tokenizer_pre = pre if isinstance(pre, str) else self.tokenizer_pre(model)
        label = self.qtype(quant)
        with tempfile.TemporaryDirectory(prefix="gt-reimport-") as tmp:
            hf_dir = Path(tmp) / "hf"
            gguf_to_hf_dir(gguf, hf_dir)
            extra = tokens_beyond_vocabulary(hf_dir)
            if extra:
                raise RuntimeUnavailable(
                    f"transformers {importlib.metadata.version('transformers')}'s GGUF loader "
                    f"gives this {config.get('model_type')} model a tokenizer with "
                    f"{', '.join(extra)} beyond its vocabulary (the loader assumes the "
                    "family's own tokenizer; this file's is tokenizer.ggml.model "
                    f"{scan_gguf(gguf).scalars.get('tokenizer.ggml.model')!r}): the roundtrip "
                    "cannot rebuild the GGUF through it")
            kept = export_gguf(hf_dir, out, label, tokenizer_pre, like=gguf)
        return (
            f"gguf_to_hf_dir({str(gguf)!r}, <tmp>)  # transformers' GGUF loader, dequantized\n"
            f"export_gguf(<tmp>, <out>, {label!r}, tokenizer_pre={tokenizer_pre!r}, "
            f"like={str(gguf)!r})  # each tensor at its type in the original: {kept}"
        )
