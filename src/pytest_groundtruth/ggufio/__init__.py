"""Our GGUF exporter and reader, built on the ``gguf`` package.

* :func:`export_gguf` writes a float32 Hugging Face safetensors directory (llama, qwen2,
  gpt2) as GGUF at F32, F16, BF16, Q8_0, Q4_0 or Q4_1, following llama.cpp's
  ``convert_hf_to_gguf.py`` (and ``llama-quantize`` for the 4-bit types).
* :func:`read_metadata` and :func:`iter_hf_tensors` read any such GGUF back (ours or
  llama.cpp's) as metadata and dequantized tensors in transformers' names and layout.

:data:`EXPORTER_VERSION` goes into artifact cache keys.
"""

from pytest_groundtruth.ggufio.names import GGUFExportError, GGUFFormatError
from pytest_groundtruth.ggufio.reader import iter_hf_tensors, read_metadata
from pytest_groundtruth.ggufio.writer import EXPORTER_VERSION, canonical_qtype, export_gguf

__all__ = [
    "EXPORTER_VERSION",
    "GGUFExportError",
    "GGUFFormatError",
    "canonical_qtype",
    "export_gguf",
    "iter_hf_tensors",
    "read_metadata",
]
