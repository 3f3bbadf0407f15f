"""The torchao runtime: in-process weight-only quantization of the transformers model on CPU.

``int8`` = ``Int8WeightOnlyConfig()`` (per-row scales); ``int4`` =
``IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))``.
torchao's ``Int4WeightOnlyConfig`` needs CUDA tile packing ("Requires mslk") and is not
used (measured with torchao 0.18 on CPU). Quantization happens when the runner opens (a
few seconds), so the artifact is the float32 directory plus the configuration, keyed by torchao's
version. Everything after loading is :class:`~pytest_groundtruth.runtimes.hf.TransformersRunner`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.runtimes.base import Artifact, Capability
from pytest_groundtruth.runtimes.hf import TransformersRunner, TransformersRuntime

if TYPE_CHECKING:
    from pytest_groundtruth.models.sources import ResolvedModel

CONFIGS = {
    "int8": "Int8WeightOnlyConfig()",
    "int4": "IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))",
}


def make_config(quant: str) -> Any:
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup

    if quant == "int8":
        return Int8WeightOnlyConfig()
    if quant == "int4":
        int4 = getattr(torch, "int4")  # noqa: B009 - absent from torch's type stubs
        return IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(32))
    raise ValueError(
        f"torchao runtime has no quantization {quant!r} (it has: {', '.join(CONFIGS)})"
    )


class TorchaoRuntime(TransformersRuntime):
    name = "torchao"
    quantizations: tuple[str, ...] = tuple(CONFIGS)
    capabilities: frozenset[Capability] = frozenset(
        {Capability.GENERATE, Capability.TOPK, Capability.PERPLEXITY, Capability.SCORE}
    )

    def unavailable(self) -> str | None:
        try:
            import torchao  # noqa: F401
        except ImportError:
            return "torchao is not installed: `pip install torchao`"
        return None

    def version(self) -> str:
        import torchao

        return f"torchao {torchao.__version__} / {super().version()}"

    def key_parts(self, quant: str) -> dict[str, str]:
        return {**super().key_parts(quant), "config": CONFIGS[quant]}

    def describe(self, model_path: Path, quant: str) -> str:
        return f"quantize_({super().describe(model_path, 'float32')}, {CONFIGS[quant]})"

    def open(self, artifact: Artifact, model: ResolvedModel) -> TorchaoRunner:
        reason = self.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        return TorchaoRunner(artifact, trust_remote_code=model.spec.trust_remote_code)


class TorchaoRunner(TransformersRunner):
    def __init__(self, artifact: Artifact, trust_remote_code: bool = False) -> None:
        float_artifact = Artifact(
            artifact.runtime, artifact.model, "float32", artifact.path, artifact.key,
            artifact.recipe,
        )
        super().__init__(float_artifact, "cpu", trust_remote_code)
        self.artifact = artifact
        import torch
        from torchao.quantization import quantize_

        start = time.perf_counter()
        with torch.no_grad():
            quantize_(self.model, make_config(artifact.quant))
        self.quantize_seconds = time.perf_counter() - start
        self.load_call = artifact.recipe
