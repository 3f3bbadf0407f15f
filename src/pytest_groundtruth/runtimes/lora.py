"""LoRA adapters in the engines: unmerged in transformers (peft), hot-applied in llama.cpp.

* :class:`UnmergedRunner`: the base model in float32 with the adapter applied by peft and
  not merged: what ``merge_and_unload()`` must reproduce.
* :func:`hot_runner`: llama.cpp loading the base model's GGUF with the adapter's GGUF
  (``Llama(lora_path=...)``, scale 1): what the merged model's GGUF must reproduce.
* :func:`logits`: raw teacher-forced logits of a transformers runner (PEFT compares
  logits, not log-probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_groundtruth.models import lora
from pytest_groundtruth.runtimes.base import Artifact, Runtime
from pytest_groundtruth.runtimes.hf import TransformersRunner
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner, LlamaCppRuntime

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class UnmergedRunner(TransformersRunner):
    def __init__(self, base: Artifact, adapter: Path) -> None:
        """``base``: the base model's float32 transformers artifact; ``adapter``: a peft
        LoRA directory, applied unmerged."""
        super().__init__(base)
        self.model = lora.apply_unmerged(self.model, adapter)
        self.load_call = f"PeftModel.from_pretrained({self.load_call}, {str(adapter)!r})"


def hot_runner(runtime: Runtime, base: Artifact, adapter_gguf: Path) -> LlamaCppRunner:
    """The base model's GGUF with the adapter GGUF applied at load time, by ``runtime``'s
    llama.cpp settings (a runtime that declares :attr:`Capability.LORA_HOT`)."""
    if not isinstance(runtime, LlamaCppRuntime):
        raise TypeError(f"runtime {runtime.name!r} is not llama.cpp: no hot-applied adapter")
    return LlamaCppRunner(base, n_threads=runtime.n_threads, n_ctx=runtime.n_ctx,
                          seed=runtime.seed, kv_cache=runtime.kv_cache_type(base.quant),
                          lora_path=adapter_gguf)


def logits(runner: TransformersRunner, ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """Raw float32 logits ``[len(ids), vocab]`` of one forward pass over ``ids``."""
    import torch

    tensor = torch.tensor([list(ids)], device=runner.device)
    with torch.inference_mode():
        out: npt.NDArray[np.float32] = runner.model(tensor).logits[0].float().cpu().numpy()
    return out
