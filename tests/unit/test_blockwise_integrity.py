"""The integrity check reads large tensors block by block: the same statistics as a
whole-tensor pass, without a float32 copy of the whole tensor (the 49152 x 576 output
layer of SmolLM2 was the known case: three 108 MiB copies at once)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_groundtruth.core.budget import MIB, _status_field, reset_peak
from pytest_groundtruth.integrity.source import SourceTensors
from pytest_groundtruth.integrity.tensors import measure
from pytest_groundtruth.integrity.torch_weights import (
    _sliceable,
    cast_reference,
    measure_tensor,
    values_of,
)
from pytest_groundtruth.models.sources import ResolvedModel

NAME = "model.embed_tokens.weight"


@pytest.mark.slow  # writes and reads 108 MiB
def test_a_large_tensor_is_compared_without_a_whole_copy(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    rows, cols = 49152, 576  # SmolLM2's embedding / tied output layer: 108 MiB of float32
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(rows, cols, generator=generator)
    save_file({NAME: weight}, str(tmp_path / "model.safetensors"))
    module_tensor = weight.to(torch.bfloat16)  # what a bfloat16 runner holds (54 MiB)
    del weight
    reference = cast_reference(torch.bfloat16)
    with SourceTensors(tmp_path, tied=True) as source:
        measure_tensor(NAME, NAME, module_tensor, source, reference)  # warm up
        if not reset_peak():
            pytest.skip("this kernel has no /proc/self/clear_refs: no peak to read")
        before = _status_field("VmHWM") or 0
        stats = measure_tensor(NAME, NAME, module_tensor, source, reference)
        grown = (_status_field("VmHWM") or 0) - before
        whole = source.load(NAME)
    # a whole pass holds the source, the artifact and the reference, 108 MiB each
    assert grown < 40 * MIB, f"peak grew by {grown / MIB:.0f} MiB"
    expected = measure(whole, values_of(module_tensor), reference(NAME, whole, None)[0],
                       name=NAME, artifact_name=NAME, qtype="torch.bfloat16")
    assert stats == expected


@pytest.mark.slow
@pytest.mark.requires_torchao
@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_torchao_tensors_block_by_block_equal_whole(
        quant: str, tiny: Callable[[str], ResolvedModel]) -> None:
    import torch

    from pytest_groundtruth.integrity.torch_weights import torchao_reference
    from pytest_groundtruth.runtimes.base import Artifact
    from pytest_groundtruth.runtimes.torchao_rt import TorchaoRunner, make_config

    model = tiny("llama")
    reference = torchao_reference(lambda: make_config(quant), torch.float32)
    with TorchaoRunner(Artifact("torchao", model.slug, quant, model.path, "k", "r")) as runner, \
            SourceTensors(model.path, tied=True) as source:
        tensor = runner.model.state_dict()["lm_head.weight"]  # 49152 rows: 3 blocks
        assert type(tensor).__module__.startswith("torchao")
        assert _sliceable(tensor)
        values = source.load(NAME)
        ref, label = reference("lm_head.weight", values, tensor)
        whole = measure(values, values_of(tensor), ref, name="lm_head.weight",
                        artifact_name="lm_head.weight", qtype=label)
        assert measure_tensor("lm_head.weight", NAME, tensor, source, reference) == whole
        assert np.isfinite(whole.rel_error)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_rows_read_are_the_tensors_rows(tmp_path: Path, dtype: str) -> None:
    import torch
    from safetensors.torch import save_file

    from pytest_groundtruth.core.tensorfiles import read_rows

    weight = torch.randn(37, 5, 3, generator=torch.Generator().manual_seed(1)).to(
        getattr(torch, dtype))
    path = str(tmp_path / "model.safetensors")
    save_file({"a": torch.zeros(2), NAME: weight}, path)
    whole = weight.float().numpy()
    for start, stop in ((0, 37), (3, 9), (30, 64), (36, 37)):
        got = read_rows(path, NAME, start, stop)
        assert got.dtype == np.float32
        assert np.array_equal(got, whole[start:stop])
    with SourceTensors(tmp_path, tied=True) as source:
        assert np.array_equal(source.rows(NAME, 10, 20), whole[10:20])
        assert np.array_equal(source.load(NAME), whole)
