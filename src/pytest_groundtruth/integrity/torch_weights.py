"""Every weight of a loaded transformers model (the transformers and torchao runtimes).

What these runtimes run is the module in memory, so that is what is read: each
``state_dict`` entry, dequantized where torchao replaced it by a quantized tensor
subclass (``.dequantize()``), in transformers' names and layout. The reference is the
source tensor put through the same library the same way: cast to the runner's dtype,
or a lone ``nn.Linear`` holding the source weight quantized with the runtime's
``quantize_`` configuration. The label of each tensor's type (``torch.bfloat16``,
``torchao.Int8Tensor``) selects :func:`~.expected_error.library_scheme`.

A matrix is compared in row blocks (:func:`measure_tensor`): the source's rows, the
module's rows (a slice of its tensor, dequantized) and the reference of those rows
(per-row and per-group quantization encode each row on its own, so a block's reference
is the whole reference's rows). No float32 copy of a whole large tensor is made, which
for SmolLM2's 49152 x 576 embedding was three of 108 MiB each (source, artifact,
reference) at once; the statistics are the same sums over the same chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_groundtruth.ggufio import names
from pytest_groundtruth.ggufio.names import HParams
from pytest_groundtruth.integrity.diagnose import diagnose
from pytest_groundtruth.integrity.expected_error import scheme
from pytest_groundtruth.integrity.findings import TensorFinding, TensorStats
from pytest_groundtruth.integrity.gguf_tensors import DIAGNOSE_LIMIT, TensorMeasurement
from pytest_groundtruth.integrity.source import SourceTensors
from pytest_groundtruth.integrity.tensors import Accumulator, judge, measure, rows_per_chunk

FloatArray = npt.NDArray[np.float32]
# (name, source values, the module's tensor) -> (reference values or None, type label)
Reference = Callable[[str, FloatArray, Any], tuple[FloatArray | None, str]]


def is_quantized(tensor: Any) -> bool:
    """A tensor subclass with its own ``dequantize`` (torchao), not a plain tensor."""
    import torch

    return type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor,
                                                                              "dequantize")


def values_of(tensor: Any) -> FloatArray:
    values = tensor.dequantize() if is_quantized(tensor) else tensor
    return np.ascontiguousarray(values.detach().float().cpu().numpy(), dtype=np.float32)


def cast_reference(dtype: Any) -> Reference:
    """The reference of a plain dtype: the source cast to ``dtype`` and back."""
    import torch

    label = f"torch.{str(dtype).removeprefix('torch.')}"

    def reference(name: str, source: FloatArray, tensor: Any) -> tuple[FloatArray | None, str]:
        cast = torch.from_numpy(source).to(dtype).float().numpy()
        return np.ascontiguousarray(cast, dtype=np.float32), label

    return reference


def torchao_reference(config_factory: Callable[[], Any], dtype: Any) -> Reference:
    """Quantize a lone ``nn.Linear`` holding the source weight with the same config."""
    import torch

    plain = cast_reference(dtype)

    def reference(name: str, source: FloatArray, tensor: Any) -> tuple[FloatArray | None, str]:
        if not is_quantized(tensor):
            return plain(name, source, tensor)
        from torchao.quantization import quantize_

        if source.ndim != 2:
            return None, f"torchao.{type(tensor).__name__}"
        linear = torch.nn.Linear(source.shape[1], source.shape[0], bias=False)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(source))
            wrapper = torch.nn.Sequential(linear)
            quantize_(wrapper, config_factory())
        return values_of(wrapper[0].weight), f"torchao.{type(tensor).__name__}"

    return reference


def measure_tensor(name: str, src: str, tensor: Any, source: SourceTensors,
                   reference: Reference) -> TensorStats:
    """Statistics of one module tensor against source tensor ``src``: a matrix row block
    by row block, anything else whole."""
    shape = tuple(int(d) for d in tensor.shape)
    step = rows_per_chunk(shape[-1]) if shape else 1
    if len(shape) != 2 or step >= shape[0] or not _sliceable(tensor):
        values = source.load(src)
        ref, label = reference(name, values, tensor)
        return measure(values, values_of(tensor), ref, name=name, artifact_name=name,
                       qtype=label)
    acc: Accumulator | None = None
    label, has_reference = "", True
    for row in range(0, shape[0], step):
        values = source.rows(src, row, row + step)
        part = tensor[row:row + step]
        got = values_of(part)
        ref, label = reference(name, values, part)
        if acc is None:
            sch = scheme(label)
            acc = Accumulator(sch.block, sch.affine, label)
        has_reference = has_reference and ref is not None
        acc.add(values, got, ref, identical=ref is not None and bool(np.array_equal(got, ref)),
                row=row)
    assert acc is not None
    return acc.stats(name, name, shape, label, scheme(label).kind if has_reference else "none")


def _sliceable(tensor: Any) -> bool:
    """Whether rows of ``tensor`` can be taken and dequantized on their own (a tensor
    subclass may not implement slicing)."""
    try:
        values_of(tensor[:1])
    except (NotImplementedError, RuntimeError, TypeError, IndexError):
        return False
    return True


def measure_module(model: Any, source: SourceTensors, hp: HParams, reference: Reference,
                   diagnose_limit: int = DIAGNOSE_LIMIT) -> TensorMeasurement:
    """Compare every ``state_dict`` entry of ``model`` with ``source``."""
    out = TensorMeasurement()
    seen: set[str] = set()
    diagnosed = 0
    for name, tensor in model.state_dict().items():
        if name.endswith(names.SKIPPED_SUFFIXES):
            continue
        src = source.resolve(name)
        shape = tuple(int(d) for d in tensor.shape)
        if src is None:
            out.structural.append(TensorFinding(name, name, shape, str(tensor.dtype),
                                                "extra tensor: the source has none"))
            continue
        seen.add(src)
        want = source.shape(src)
        if shape != want:
            out.structural.append(TensorFinding(
                name, name, shape, str(tensor.dtype),
                f"shape {list(shape)}, the source has {list(want)}"))
            continue
        stats = measure_tensor(name, src, tensor, source, reference)
        verdict = judge(stats)
        if verdict.problem and diagnosed < diagnose_limit:
            diagnosed += 1  # a failing tensor: its values are examined whole
            bound = verdict.max_rel_error
            stats = replace(stats, diagnosis=diagnose(
                hp, name, values_of(tensor), source.load(src), source,
                bound if bound is not None and math.isfinite(bound) else 0.0,
                gguf_layout=False))
        out.stats.append(stats)
    for name in source.names:
        if name not in seen and not (name == "lm_head.weight" and hp.tied):
            out.structural.append(TensorFinding(name, name, source.shape(name), "-",
                                                "missing from the loaded model"))
    return out
