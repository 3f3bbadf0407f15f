"""Draft models for speculative decoding: a layer-truncated copy of a target.

The draft keeps the target's embeddings, its first ``layers`` decoder blocks, its final
norm and its LM head, byte for byte, and the target's tokenizer files: the same
vocabulary by construction, so greedy assisted generation with it must reproduce the
target's greedy tokens exactly, whatever its acceptance rate. Built from the target's
safetensors by name (no RNG, no model class), so the same target always gives the same
draft; its fingerprint is its tensors' content (:mod:`~pytest_groundtruth.models.content`).

Roster source: ``truncate:TARGET`` with the entry's ``layers`` field as the number of
blocks kept (``smollm2-135m-draft``, ``tiny-llama-draft`` are built in).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from pytest_groundtruth.models.content import RECORD

# Bump when the construction below changes: it is part of the draft's fingerprint.
BUILDER_VERSION = 1

# Decoder block tensors: llama/qwen2 (`model.layers.N.`), gpt2 (`transformer.h.N.`).
_BLOCK = re.compile(r"^(?:model\.layers|transformer\.h|h)\.(\d+)\.")
# config.json keys holding the block count, by architecture family.
_LAYER_KEYS = ("num_hidden_layers", "n_layer")


class DraftError(ValueError):
    """The target cannot be truncated as asked (names the target and the problem)."""


def block_of(name: str) -> int | None:
    """The decoder block index a tensor name belongs to, or None (embeddings, norm, head)."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def truncate(target: Path, layers: int, out: Path) -> None:
    """Write the first ``layers`` blocks of the HF model at ``target`` to ``out``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    key = next((k for k in _LAYER_KEYS if isinstance(config.get(k), int)), None)
    if key is None:
        raise DraftError(f"{target / 'config.json'}: no layer count "
                         f"({' or '.join(_LAYER_KEYS)}) to truncate")
    if not 0 < layers < config[key]:
        raise DraftError(f"{target}: a draft must keep 1..{config[key] - 1} of the target's "
                         f"{config[key]} layers, not {layers}")
    files = sorted(target.glob("*.safetensors"))
    if not files:
        raise DraftError(f"{target}: no *.safetensors weights to truncate")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                block = block_of(name)
                if block is None or block < layers:
                    tensors[name] = fh.get_tensor(name)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config[key] = layers
    if isinstance(config.get("layer_types"), list):
        config["layer_types"] = config["layer_types"][:layers]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
    for extra in sorted(target.iterdir()):
        if extra.is_file() and extra.suffix != ".safetensors" and not extra.name.startswith(
                ".") and extra.name not in ("config.json", "model.safetensors.index.json",
                                            RECORD):
            shutil.copyfile(extra, out / extra.name)


def _tokenizer(model_dir: Path) -> tuple[str, dict[str, int]]:
    """(a name for the tokenizer, its vocabulary with added tokens), from its files."""
    from tokenizers import Tokenizer

    file = model_dir / "tokenizer.json"
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        kind = str(config.get("tokenizer_class") or "tokenizer")
    except (OSError, ValueError):
        kind = "tokenizer"
    if not file.is_file():
        from transformers import AutoTokenizer

        slow = AutoTokenizer.from_pretrained(model_dir)
        return f"{type(slow).__name__} at {model_dir}", dict(slow.get_vocab())
    vocab = Tokenizer.from_file(str(file)).get_vocab(with_added_tokens=True)
    return f"{kind} {file}", dict(vocab)


def vocabulary_mismatch(target: Path, draft: Path) -> str | None:
    """Why a draft at ``draft`` cannot assist the target at ``target`` token for token
    (different vocabularies), naming both tokenizers; None when they share one.

    Byte-identical ``tokenizer.json`` files (a truncated draft copies its target's) hold
    the same vocabulary: answered without parsing them, which takes a quarter of a second
    per file for a 49k-token vocabulary, on every speculative case of a warm run."""
    files = (target / "tokenizer.json", draft / "tokenizer.json")
    if all(f.is_file() for f in files) and files[0].stat().st_size == files[1].stat().st_size \
            and files[0].read_bytes() == files[1].read_bytes():
        return None
    target_name, target_vocab = _tokenizer(target)
    draft_name, draft_vocab = _tokenizer(draft)
    if target_vocab == draft_vocab:
        return None
    by_id = {i: t for t, i in target_vocab.items()}
    draft_by_id = {i: t for t, i in draft_vocab.items()}
    first = min((i for i in set(by_id) | set(draft_by_id) if by_id.get(i) != draft_by_id.get(i)),
                default=None)
    where = "" if first is None else (
        f"; first difference: id {first} is {by_id.get(first)!r} in the target and "
        f"{draft_by_id.get(first)!r} in the draft")
    return (f"the draft's tokenizer ({draft_name}, {len(draft_vocab)} tokens) is not the "
            f"target's ({target_name}, {len(target_vocab)} tokens){where}")
