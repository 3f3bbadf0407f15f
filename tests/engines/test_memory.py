"""Memory a process gives back: runners closed across pools, heaps trimmed, no file
mapping held beside a quantized model (issue 13: peak resident memory of a pytest
process at most twice the largest model it holds; measured by `groundtruth bench`)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.core.memory import release_memory, trim_heap
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.hf import TransformersRunner
from pytest_groundtruth.runtimes.torchao_rt import TorchaoRunner
from pytest_groundtruth.store.pool import RunnerPool, close_open_runners


def f32(model: ResolvedModel) -> Artifact:
    return Artifact("transformers", model.slug, "float32", model.path, model.fingerprint, "r")


def test_trim_and_release_run_here() -> None:
    # glibc trims (True when it gave pages back, False when there were none); elsewhere False
    assert trim_heap() in (True, False)
    assert release_memory() in (True, False)


@pytest.mark.slow
def test_opening_a_runner_closes_the_other_pools_runners(
        tiny: Callable[[str], ResolvedModel]) -> None:
    fixtures, matrix = RunnerPool(2), RunnerPool(1)
    first = fixtures.get("llama", lambda: TransformersRunner(f32(tiny("llama"))))
    second = fixtures.get("qwen2", lambda: TransformersRunner(f32(tiny("qwen2"))))
    assert len(fixtures) == 2  # a pool keeps its own size
    third = matrix.get("gpt2", lambda: TransformersRunner(f32(tiny("gpt2"))))
    assert len(fixtures) == 0
    assert len(matrix) == 1
    assert not hasattr(first, "model")
    assert not hasattr(second, "model")
    assert hasattr(third, "model")
    assert close_open_runners() == 1
    assert len(matrix) == 0
    assert not hasattr(third, "model")


def mapped_files() -> list[tuple[int, int, str]]:
    """(start, end, path) of this process's file mappings of safetensors files."""
    found = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5].endswith(".safetensors"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.append((start, end, parts[5]))
    return found


@pytest.mark.requires_torchao
def test_largest_first_quantizes_as_one_pass(tiny: Callable[[str], ResolvedModel]) -> None:
    """Quantizing the largest layer first changes nothing: each layer on its own."""
    import torch
    from torchao.quantization import quantize_
    from transformers import AutoModelForCausalLM

    from pytest_groundtruth.runtimes.torchao_rt import make_config, quantize_largest_first

    path = tiny("llama").path
    for quant in ("int8", "int4"):
        one, two = (AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
                    for _ in range(2))
        quantize_(one, make_config(quant))
        assert quantize_largest_first(two, make_config(quant)) == "lm_head"
        a, b = one.state_dict(), two.state_dict()
        assert a.keys() == b.keys()
        for name in a:
            assert type(a[name]) is type(b[name]), name
            x, y = a[name], b[name]
            if type(x) is not torch.Tensor:
                x, y = x.dequantize(), y.dequantize()
            assert torch.equal(x, y), name


@pytest.mark.slow
@pytest.mark.requires_torchao
@pytest.mark.skipif(not Path("/proc/self/maps").is_file(),
                    reason="reads /proc/self/maps: Linux only")
@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_a_quantized_model_holds_no_mapping_of_the_float32_file(
        tiny: Callable[[str], ResolvedModel], quant: str) -> None:
    import torch

    model = tiny("llama")
    reference = TransformersRunner(f32(model))
    # transformers loads safetensors as views of the file's mapping (zero copy) ...
    assert any(path == str(model.path / "model.safetensors") for *_, path in mapped_files())
    reference.close()
    gc.collect()
    runner = TorchaoRunner(Artifact("torchao", model.slug, quant, model.path, "k", "r"))
    # ... which the quantized model, holding copies of what it did not quantize, drops.
    assert [m for m in mapped_files() if m[2] == str(model.path / "model.safetensors")] == []
    plain = [p for p in runner.model.parameters() if type(p.data) is torch.Tensor]
    assert plain  # the embedding and the norms stay float32
    quantized = {name for name, w in runner.model.state_dict().items()
                 if type(w) is not torch.Tensor}
    # every linear layer quantized, the largest (the output projection) among them
    assert "lm_head.weight" in quantized
    assert "model.layers.1.mlp.down_proj.weight" in quantized
    assert runner.model.model.embed_tokens.weight.dtype == torch.float32
    runner.close()


def test_no_glibc_means_no_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes.util

    from pytest_groundtruth.core import memory

    memory._malloc_trim.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    try:
        assert memory.trim_heap() is False
    finally:
        monkeypatch.undo()
        memory._malloc_trim.cache_clear()
    assert sys.platform != "linux" or memory._malloc_trim() is not None
