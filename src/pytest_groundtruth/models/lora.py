"""LoRA adapters: a deterministic built-in one, a user's own, and their merge into the base.

The built-in adapter is built with ``peft`` on the base model: rank 8 on the attention
``q_proj`` and ``v_proj`` projections (``lora_alpha`` 16, no dropout, no bias), with
weights drawn from numpy's PCG64 generator seeded with (seed, crc32(parameter name)), so
they depend on neither torch's RNG nor the order peft creates modules in. An untrained
LoRA (``B = 0``) changes nothing and would make every merge check pass vacuously; here
each module's update ``(alpha / r) B A`` is scaled to :data:`RELATIVE_SIZE` of the
Frobenius norm of the weight it adapts: large enough to change the greedy output of the
embedded model on every prompt that does not end at once (docs/lora.md has the figures),
small enough to keep it a language model.

The built-in adapter is written by us, not by peft's ``save_pretrained``: the LoRA tensors
in ``adapter_model.safetensors`` and an ``adapter_config.json`` holding only the fields we
set (:func:`adapter_config`), which every peft since 0.13 reads. peft's own config names
every field of the version that wrote it (0.22.0 added ``astra_config``), and an older
peft refuses a field it does not know (``LoraConfig.__init__() got an unexpected keyword
argument 'astra_config'``): a cached adapter would then be readable only by the peft
that wrote it.

A user's adapter is a ``peft`` LoRA directory (``adapter_config.json`` and
``adapter_model.safetensors``; pickle ``adapter_model.bin`` is not loaded).

:func:`merge` is peft's ``merge_and_unload()`` saved as a float32 safetensors model
directory with the base's tokenizer: the merged model is then a model like any other
(roster source ``lora:BASE`` or ``lora:BASE:ADAPTER_DIR``).
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from pathlib import Path
from typing import Any

from pytest_groundtruth.core.hashing import digest
from pytest_groundtruth.models.content import RECORD, ContentError, tensor_hashes

# Bump when the construction below changes: it is part of every fingerprint.
BUILDER_VERSION = 2
SEED = 20261201
RANK = 8
ALPHA = 16
TARGET_MODULES = ("q_proj", "v_proj")
RELATIVE_SIZE = 0.2  # ||(alpha/r) B A||_F / ||W||_F for each adapted module
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(ValueError):
    """An adapter directory is missing, unsafe or not a LoRA adapter (names the file)."""


def builtin_key(base_fingerprint: str) -> str:
    """Where the built-in adapter of a base is cached: what it is made of."""
    return digest({"adapter": "builtin-lora", "base": base_fingerprint, "seed": SEED,
                   "rank": RANK, "alpha": ALPHA, "targets": TARGET_MODULES,
                   "relative": RELATIVE_SIZE, "builder": BUILDER_VERSION})


def adapter_config(base_name: str) -> dict[str, Any]:
    """The built-in adapter's ``adapter_config.json``: our fields only (module docstring)."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": ALPHA,
            "target_modules": sorted(TARGET_MODULES), "lora_dropout": 0.0, "bias": "none",
            "fan_in_fan_out": False, "inference_mode": True,
            "base_model_name_or_path": base_name}


def adapter_fingerprint(adapter: Path) -> str:
    """What identifies an adapter: its config and its tensors' contents (not the bytes of
    the safetensors header, which the writing library may change)."""
    config = check_adapter(adapter)
    try:
        tensors = tensor_hashes(adapter)
    except ContentError as exc:
        raise AdapterError(str(exc)) from exc
    return digest({"config": config, "weights": digest(tensors)})


def check_adapter(adapter: Path) -> dict[str, Any]:
    """The adapter's config, after checking it is a safetensors LoRA adapter."""
    if not adapter.is_dir():
        raise AdapterError(f"{adapter}: no such adapter directory (a peft LoRA adapter: "
                           f"{' and '.join(ADAPTER_FILES)})")
    config_file = adapter / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{config_file}: unreadable adapter config ({exc})") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        found = config.get("peft_type") if isinstance(config, dict) else config
        raise AdapterError(f"{config_file}: peft_type is {found!r}, not 'LORA'")
    if not (adapter / "adapter_model.safetensors").is_file():
        extra = (" (adapter_model.bin is a pickle and is not loaded: convert it to "
                 "safetensors)" if (adapter / "adapter_model.bin").exists() else "")
        raise AdapterError(f"{adapter}: no adapter_model.safetensors{extra}")
    return config


def _draw(name: str, shape: tuple[int, ...]) -> Any:
    import numpy as np

    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    return rng.standard_normal(shape)


def build_adapter(base: Path, out: Path) -> None:
    """Write the built-in deterministic LoRA adapter for the model at ``base`` to ``out``."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32,
                                                 use_safetensors=True)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in TARGET_MODULES if m not in present]
    if missing:
        raise AdapterError(
            f"{base}: the built-in adapter targets {', '.join(TARGET_MODULES)}, and this "
            f"{model.config.model_type} model has no {', '.join(missing)} (configure your "
            "own adapter: [tool.groundtruth.adapters.NAME] base = ..., path = ...)")
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(TARGET_MODULES),
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    scale = ALPHA / RANK
    modules = dict(peft_model.named_modules())
    with torch.no_grad():
        for name, module in modules.items():
            if not (hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {})):
                continue
            weight = module.base_layer.weight.double().numpy()
            a_param = module.lora_A["default"].weight
            b_param = module.lora_B["default"].weight
            a = _draw(f"{name}.lora_A", tuple(a_param.shape)) / math.sqrt(a_param.shape[1])
            b = _draw(f"{name}.lora_B", tuple(b_param.shape))
            delta = np.linalg.norm(scale * (b @ a))
            b *= RELATIVE_SIZE * np.linalg.norm(weight) / delta
            a_param.copy_(torch.from_numpy(a.astype(np.float32)))
            b_param.copy_(torch.from_numpy(b.astype(np.float32)))
    # peft's saved form (module docstring): its state dict names, our config. The base
    # is named by its cache folder (content-addressed), not by an absolute path.
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(
        json.dumps(adapter_config(base.name), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def apply_unmerged(model: Any, adapter: Path) -> Any:
    """``model`` with the adapter applied and not merged (a peft ``PeftModel``)."""
    from peft import PeftModel

    check_adapter(adapter)
    return PeftModel.from_pretrained(model, str(adapter)).eval()


def merge(base: Path, adapter: Path, out: Path) -> None:
    """``merge_and_unload()`` of ``adapter`` on ``base``, saved with the base's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32,
                                                 use_safetensors=True)
    merged = apply_unmerged(model, adapter).merge_and_unload()
    merged.save_pretrained(out)
    for file in sorted(base.iterdir()):  # the tokenizer, byte for byte (not the cache's files)
        if file.is_file() and not (out / file.name).exists() and file.suffix != ".safetensors" \
                and not file.name.startswith(".") \
                and file.name not in ("model.safetensors.index.json", RECORD):
            shutil.copyfile(file, out / file.name)
