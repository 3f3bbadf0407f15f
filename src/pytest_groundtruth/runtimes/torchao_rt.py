"""The torchao runtime: in-process weight-only quantization of the transformers model on CPU.

``int8`` = ``Int8WeightOnlyConfig()`` (per-row scales); ``int4`` =
``IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))``.
torchao's ``Int4WeightOnlyConfig`` needs CUDA tile packing ("Requires mslk") and is not
used (measured with torchao 0.18 on CPU). Quantization happens when the runner opens (a
few seconds), so the artifact is the float32 directory plus the configuration, keyed by torchao's
version. Everything after loading is :class:`~pytest_groundtruth.runtimes.hf.TransformersRunner`.

Speed of ``int4`` on CPU (docs/benchmarks.md has the measurement): torchao 0.18 runs an
``IntxUnpackedToInt8Tensor`` weight as ``F.linear(x, weight.dequantize(), bias)``,
dequantizing the whole weight (the 49152 x 576 tied output layer included) at every
call: most of a generation's time (cProfile). :func:`dequantize_once` computes each such
``weight.dequantize()`` once when the runner opens and gives the module a forward that
makes exactly that call with it, so logits are bit-identical to torchao's own path
(``tests/engines/test_torchao_speed.py``) at float32 speed; the quantized tensors stay in
the module's ``state_dict`` for the integrity suite. The copies are float32 (540 MiB for
SmolLM2, more than the float32 model's linear layers): they are made only while they fit
the memory budget (:mod:`~pytest_groundtruth.core.budget`) beside what the process holds,
module by module; a module whose copy does not fit keeps torchao's per-call path (the
same logits, slower). The float32 model itself is loaded whole to be quantized.
torchao's CPU int4 kernel
(``_weight_int4pack_mm_for_cpu``, ``PrototypeInt4WeightOnlyConfig``) is fast only with
bfloat16 activations and asymmetric scales: a different artifact, not used.
"""

from __future__ import annotations

import importlib.util
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.core.budget import rss_bytes
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.core.memory import release_memory
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.runtimes.base import Artifact, Capability
from pytest_groundtruth.runtimes.hf import (
    MemoryBudget,
    TransformersRunner,
    TransformersRuntime,
    working_bytes,
)

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
    # Not the float32 reference's assisted generation or unmerged adapter: those judge
    # transformers itself, once.
    capabilities: frozenset[Capability] = frozenset(
        {Capability.GENERATE, Capability.CHAT, Capability.TOPK, Capability.PERPLEXITY,
         Capability.SCORE}
    )

    def unavailable(self) -> str | None:
        # Looked up, not imported: importing torchao imports torch and torch._dynamo
        # (seconds), which a warm run that opens no runner must not pay. A torchao that
        # is installed but broken fails when a runner opens.
        if importlib.util.find_spec("torchao") is None:
            return "torchao is not installed: `pip install torchao`"
        return None

    def version(self) -> str:
        return f"torchao {package_version('torchao')} / {super().version()}"

    def key_parts(self, quant: str) -> dict[str, str]:
        return {**super().key_parts(quant), "config": CONFIGS[quant]}

    def describe(self, model_path: Path, quant: str) -> str:
        return f"quantize_({super().describe(model_path, 'float32')}, {CONFIGS[quant]})"

    def open(self, artifact: Artifact, model: ResolvedModel) -> TorchaoRunner:
        reason = self.unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        return TorchaoRunner(artifact, trust_remote_code=model.spec.trust_remote_code,
                             n_threads=self.n_threads, budget=self.budget)


class TorchaoRunner(TransformersRunner):
    def __init__(self, artifact: Artifact, trust_remote_code: bool = False,
                 n_threads: int | None = None, fast: bool = True,
                 budget: MemoryBudget | None = None) -> None:
        """``fast``: dequantize unpacked int4 weights once (:func:`dequantize_once`),
        as far as ``budget`` allows; False runs torchao's per-call path (the reference
        the equivalence test uses)."""
        float_artifact = Artifact(
            artifact.runtime, artifact.model, "float32", artifact.path, artifact.key,
            artifact.recipe,
        )
        super().__init__(float_artifact, "cpu", trust_remote_code, n_threads)
        self.artifact = artifact
        import torch

        start = time.perf_counter()
        with torch.no_grad():
            quantize_largest_first(self.model, make_config(artifact.quant))
            own_memory(self.model)
            release_memory()  # the float32 file mapping and quantize_'s temporaries
            room = (None if budget is None
                    else budget.limit - rss_bytes() - working_bytes(artifact.path))
            self.dequantized = dequantize_once(self.model, room) if fast else 0
            release_memory()
        self.quantize_seconds = time.perf_counter() - start
        self.load_call = artifact.recipe


def quantize_largest_first(model: Any, config: Any) -> str | None:
    """``quantize_(model, config)``, the largest linear layer first (the output
    projection, 49152 x 576 for SmolLM2), then the others: each layer is quantized on
    its own, so the result is the same, but the largest layer's float32 temporaries
    (several copies of it) come while the rest of the float32 weights are still
    unread pages of the file, not beside all of them (measured on smollm2-135m int8:
    peak 1006 MiB instead of 1503). Returns the largest layer's name."""
    import inspect

    from torchao.quantization import quantize_

    chosen = inspect.signature(quantize_).parameters["filter_fn"].default  # torchao's own
    modules = dict(model.named_modules())
    linear = [name for name, module in modules.items() if chosen(module, name)]
    if not linear:
        quantize_(model, config)
        return None
    largest: str = max(linear, key=lambda name: int(modules[name].weight.numel()))
    quantize_(model, config, filter_fn=lambda module, fqn: fqn == largest)
    quantize_(model, config, filter_fn=lambda module, fqn: fqn != largest and chosen(module, fqn))
    return largest


def own_memory(model: Any) -> int:
    """Copy the parameters that ``quantize_`` left as plain tensors (embeddings, norms,
    biases) out of the float32 file's memory mapping, so that the mapping, which each of
    them keeps alive whole, is unmapped: transformers loads safetensors as views of one
    mapping, and after quantization the runner would otherwise hold every page of the
    float32 file it read (the size of the model) beside its quantized copy. Values are
    unchanged (a copy); ties are kept (a shared parameter is one object). Returns how
    many parameters were copied."""
    import torch

    copied = 0
    for param in model.parameters():  # each shared parameter once
        if type(param.data) is torch.Tensor:
            param.data = param.data.clone()
            copied += 1
    return copied


def _dense_linear(weight: Any, bias: Any, x: Any) -> Any:
    import torch

    return torch.nn.functional.linear(x, weight, bias)


def dequantize_once(model: Any, room: int | None = None) -> int:
    """Give every ``nn.Linear`` whose weight is torchao's ``IntxUnpackedToInt8Tensor``
    (weight-only: no activation quantization) a forward that calls
    ``F.linear(x, W, bias)`` with ``W = weight.dequantize()`` computed now, once: what
    torchao's own linear computes at every call. The weight itself stays the quantized
    tensor (``state_dict`` unchanged). ``room``: the bytes the float32 copies may take
    (None: no limit); a module whose copy would pass it keeps torchao's path. Returns
    how many modules were changed."""
    import torch
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
    )

    changed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (
            isinstance(module, torch.nn.Linear)
            and isinstance(weight, IntxUnpackedToInt8Tensor)
            and weight.activation_quantization is None
        ):
            size = int(weight.numel()) * 4  # the float32 copy
            if room is not None:
                if size > room:
                    continue
                room -= size
            # an instance attribute shadows nn.Linear.forward for this module only
            setattr(module, "forward",  # noqa: B010
                    partial(_dense_linear, weight.dequantize(), module.bias))
            changed += 1
    return changed
