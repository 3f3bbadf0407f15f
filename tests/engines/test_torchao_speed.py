"""torchao int4 on CPU, dequantized once: bit-identical to torchao's own per-call path.

torchao 0.18 runs an ``IntxUnpackedToInt8Tensor`` linear as ``F.linear(x,
weight.dequantize(), bias)``; :func:`dequantize_once` makes that ``dequantize()`` once
at load. If a torchao release changes how such a weight multiplies (a packed kernel, a
different rounding), the logits below stop being identical and this fails: the fast
path must then go.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.torchao_rt import TorchaoRunner

pytestmark = pytest.mark.requires_torchao

PROMPT = "def fibonacci(n):"


def runner(model: ResolvedModel, quant: str, fast: bool) -> TorchaoRunner:
    return TorchaoRunner(Artifact("torchao", model.slug, quant, model.path, "k", "r"), fast=fast)


@pytest.mark.slow
def test_int4_dequantized_once_is_bit_identical(tiny: Callable[[str], ResolvedModel]) -> None:
    import numpy as np
    import torch
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
    )

    model = tiny("llama")
    slow, fast = runner(model, "int4", fast=False), runner(model, "int4", fast=True)
    assert slow.dequantized == 0
    assert fast.dequantized == 15  # 2 layers x 7 projections + lm_head
    ids = fast.tokenize(PROMPT + " return n if n < 2 else fibonacci(n - 1)")
    assert np.array_equal(slow.sequence_logprobs(ids), fast.sequence_logprobs(ids))
    a, b = slow.generate(PROMPT, 16, top_k=5), fast.generate(PROMPT, 16, top_k=5)
    assert (a.tokens, a.topk) == (b.tokens, b.topk)
    # The module still holds torchao's quantized weights (what the integrity suite reads).
    weights = dict(fast.model.state_dict())
    assert isinstance(weights["model.layers.0.mlp.down_proj.weight"], IntxUnpackedToInt8Tensor)
    with torch.no_grad():
        layer = fast.model.model.layers[0].mlp.down_proj
        x = torch.randn(3, layer.in_features)
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight.dequantize()))


def test_int8_is_left_to_torchao(tiny: Callable[[str], ResolvedModel]) -> None:
    """Int8WeightOnlyConfig multiplies with torch's int8 kernel: nothing to dequantize."""
    assert runner(tiny("llama"), "int8", fast=True).dequantized == 0


@pytest.mark.slow
def test_int4_copies_are_kept_only_within_the_budget(tiny: Callable[[str], ResolvedModel],
                                                      tmp_path: Path) -> None:
    """No room in the budget: no float32 copy, torchao's own path, the same logits."""
    import numpy as np

    from pytest_groundtruth.core.budget import rss_bytes
    from pytest_groundtruth.runtimes.hf import MemoryBudget

    model = tiny("llama")
    art = Artifact("torchao", model.slug, "int4", model.path, "k", "r")
    roomy = TorchaoRunner(art, budget=MemoryBudget(2**40, tmp_path))
    assert roomy.dequantized == 15
    ids = roomy.tokenize(PROMPT + " return n")
    expected = roomy.sequence_logprobs(ids)
    roomy.close()
    tight = TorchaoRunner(art, budget=MemoryBudget(rss_bytes(), tmp_path))
    assert tight.dequantized == 0
    assert np.array_equal(tight.sequence_logprobs(ids), expected)
    tight.close()
