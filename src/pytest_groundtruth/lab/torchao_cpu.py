"""Why the torchao runtime runs int4 as it does on CPU: each path torchao offers, measured.

torchao 0.18 offers these CPU paths for weight-only int4 with group size 32:

* ``IntxWeightOnlyConfig(int4, PerGroup(32))`` (the runtime's ``int4``): torchao's own
  linear dequantizes the whole weight at every call;
* the same weights dequantized once at load (what the runtime does,
  :func:`~pytest_groundtruth.runtimes.torchao_rt.dequantize_once`): the same ``F.linear``
  on the same numbers;
* ``PrototypeInt4WeightOnlyConfig(group_size=32)``: torch's CPU int4 kernel
  (``_weight_int4pack_mm_for_cpu``, tinygemm layout, asymmetric scales and zero points),
  with float32 activations and with the model in bfloat16 (the kernel's fast case).

:func:`compare_paths` generates the prompts with each, next to the float32 model, and
reports tokens/s and how many tokens differ from the oracle (``groundtruth bench``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_groundtruth.context import Context
from pytest_groundtruth.measures.sequences import count_mismatches
from pytest_groundtruth.runtimes.base import Artifact, respond
from pytest_groundtruth.runtimes.hf import TransformersRunner
from pytest_groundtruth.runtimes.torchao_rt import CONFIGS, TorchaoRunner

RUNTIME = 1  # the path the runtime takes, in :func:`compare_paths`' list


@dataclass(frozen=True)
class PathTiming:
    path: str
    tokens_per_s: float
    mismatches: tuple[int, ...]  # per prompt, against the oracle
    same_as_runtime: bool | None  # tokens identical to the runtime's int4 (None: it is it)


def _prototype(model_path: Any, slug: str, bfloat16: bool) -> TransformersRunner:
    import torch
    from torchao.prototype.quantization.int4.inference_workflow import (
        PrototypeInt4WeightOnlyConfig,
    )
    from torchao.quantization import quantize_

    runner = TransformersRunner(Artifact("torchao", slug, "float32", model_path, "k", "r"))
    with torch.no_grad():
        if bfloat16:
            runner.model.to(torch.bfloat16)
        quantize_(runner.model, PrototypeInt4WeightOnlyConfig(group_size=32))
    return runner


def compare_paths(ctx: Context, slug: str) -> list[PathTiming]:
    """Generate every prompt with each int4 path of ``slug`` (and float32), one at a time."""
    model = ctx.engines.model(slug)
    base = Artifact("torchao", slug, "int4", model.path, model.fingerprint, CONFIGS["int4"])
    paths: list[tuple[str, Callable[[], TransformersRunner]]] = [
        ("transformers float32 (no quantization)", lambda: TransformersRunner(
            Artifact("transformers", slug, "float32", model.path, "k", "r"))),
        (f"{CONFIGS['int4']}, dequantized once (the runtime)",
         lambda: TorchaoRunner(base, fast=True)),
        (f"{CONFIGS['int4']}, torchao's per-call dequantize",
         lambda: TorchaoRunner(base, fast=False)),
        ("PrototypeInt4WeightOnlyConfig(group_size=32), float32 activations",
         lambda: _prototype(model.path, slug, bfloat16=False)),
        ("PrototypeInt4WeightOnlyConfig(group_size=32), model in bfloat16",
         lambda: _prototype(model.path, slug, bfloat16=True)),
    ]
    n = ctx.settings.max_new_tokens
    prompts = list(ctx.inputs.prompts.values())
    oracles = [ctx.inputs.oracle(slug, p.name).tokens for p in prompts]
    measured = []
    for name, open_runner in paths:
        with open_runner() as runner:
            respond(runner, prompts[0], 2)  # first-call setup is not generation speed
            gens = [respond(runner, p, n) for p in prompts]
        seconds = sum(g.seconds for g in gens)
        measured.append((name, [g.tokens for g in gens],
                         sum(len(g.tokens) for g in gens) / seconds if seconds else 0.0))
    runtime_tokens = measured[RUNTIME][1]
    return [PathTiming(name, speed,
                       tuple(count_mismatches(o, t) for o, t in zip(oracles, tokens, strict=True)),
                       None if i in (0, RUNTIME) else tokens == runtime_tokens)
            for i, (name, tokens, speed) in enumerate(measured)]
