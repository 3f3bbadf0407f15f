"""The stand-in's engine: the project's transformers runner, quantized as apr would.

int8 and int4 are torchao weight-only quantization with the torchao runtime's own
configurations (:func:`pytest_groundtruth.runtimes.torchao_rt.make_config`); fp16 is
float16 weights and activations; an unquantized archive or a GGUF file is float32.
"""

from __future__ import annotations

from pathlib import Path

from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.hf import TransformersRunner
from pytest_groundtruth.runtimes.torchao_rt import CONFIGS, make_config

#: apr's quantization names -> the configuration applied (the torchao runtime's).
TORCHAO_CONFIGS = CONFIGS


def load_runner(path: Path, quant: str) -> TransformersRunner:
    """The project's transformers runner on ``path``, quantized as ``quant``."""
    dtype = "float16" if quant == "fp16" else "float32"
    artifact = Artifact("apr-standin", path.name, dtype, path, key="", recipe="")
    runner = TransformersRunner(artifact)
    if quant in TORCHAO_CONFIGS:
        import torch
        from torchao.quantization import quantize_

        with torch.no_grad():
            quantize_(runner.model, make_config(quant))
    return runner
