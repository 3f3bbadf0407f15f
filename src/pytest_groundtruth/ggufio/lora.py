"""A peft LoRA adapter as a GGUF adapter file, for llama.cpp to apply at load time.

What ``convert_lora_to_gguf.py`` writes for a plain LoRA (tests/engines/test_lora.py
compares the two tensor by tensor): ``general.type = "adapter"``, ``adapter.type =
"lora"``, ``adapter.lora.alpha``, and per adapted weight ``<gguf name>.lora_a``
(``[rank, in]``) and ``<gguf name>.lora_b`` (``[out, rank]``) in F32. The rows of a llama
``q_proj``/``k_proj`` weight are permuted into llama.cpp's RoPE layout, so the rows of
its ``lora_b`` are permuted the same way (``W = B A``). llama.cpp then adds
``scale * alpha / rank * B (A x)`` to the weight's product, scale being ``lora_scale``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from pytest_groundtruth.core.atomic import atomic_path
from pytest_groundtruth.ggufio import names
from pytest_groundtruth.ggufio.names import GGUFExportError
from pytest_groundtruth.ggufio.reader import gguf_problem, scan_gguf

WRITER_VERSION = 1  # bump when the file this writes changes
_PREFIX = "base_model.model."
_PARTS = {".lora_A.weight": "lora_a", ".lora_B.weight": "lora_b"}


def adapter_tensors(adapter: Path, hp: names.HParams) -> list[tuple[str, Any]]:
    """(GGUF name, float32 array) of every LoRA tensor, in llama.cpp's layout and order."""
    from safetensors.numpy import load_file

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise GGUFExportError(f"{adapter}: no adapter_model.safetensors")
    pairs: dict[str, dict[str, Any]] = {}
    for name, value in load_file(str(weights)).items():
        part = next((p for p in _PARTS if name.endswith(p)), None)
        if part is None or not name.startswith(_PREFIX):
            raise GGUFExportError(f"{weights}: tensor {name!r} is not a LoRA A/B weight "
                                  "(only plain LoRA on linear layers is exported)")
        base = name[len(_PREFIX):-len(part)] + ".weight"
        pairs.setdefault(base, {})[_PARTS[part]] = value.astype(np.float32)
    out = []
    for base, pair in pairs.items():
        target = names.gguf_name(hp, base)
        if target is None or set(pair) != {"lora_a", "lora_b"}:
            raise GGUFExportError(f"{weights}: {base!r} has no llama.cpp tensor or lacks "
                                  "its A or B half")
        if hp.model_type == "gpt2":
            raise GGUFExportError(f"{weights}: GPT-2 Conv1D adapters are not exported")
        # W = B A: the weight's row permutation is B's.
        b = names.to_gguf_layout(hp, base, pair["lora_b"])
        out.append((f"{target}.lora_a", np.ascontiguousarray(pair["lora_a"])))
        out.append((f"{target}.lora_b", np.ascontiguousarray(b)))
    return out


def export_lora_gguf(adapter: Path, base_model: Path, out: Path) -> None:
    """Write the peft LoRA ``adapter`` for the HF model at ``base_model`` as GGUF at ``out``."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    alpha = config.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise GGUFExportError(f"{adapter / 'adapter_config.json'}: lora_alpha = {alpha!r}")
    hp = names.hparams(names.read_config(base_model), str(base_model / "config.json"))
    tensors = adapter_tensors(adapter, hp)
    writer = gguf.GGUFWriter(path=None, arch=hp.arch_name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, data in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes)
    with atomic_path(out) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for _, data in tensors:
                writer.write_tensor_data(data)
        finally:
            writer.close()


def adapter_problem(path: Path) -> str | None:
    """Why ``path`` is not a sound GGUF LoRA adapter, or None."""
    problem = gguf_problem(path)
    if problem:
        return problem
    scalars = scan_gguf(path).scalars
    if scalars.get("general.type") != "adapter" or scalars.get("adapter.type") != "lora":
        return (f"{path}: general.type {scalars.get('general.type')!r}, adapter.type "
                f"{scalars.get('adapter.type')!r}: not a LoRA adapter")
    return None
