"""The ``tokenizer.*`` metadata of a GGUF, from a Hugging Face tokenizer directory.

Follows llama.cpp's converter (``TextModel.get_vocab_base`` / ``_set_vocab_gpt2`` and
gguf-py's ``SpecialVocab`` as vendored in llama-cpp-python 0.3.36) for GPT-2-style
byte-level BPE tokenizers (tokenizer.json with a ``BPE`` model), which is what
llama, qwen2 and gpt2 checkpoints ship:

* ``tokenizer.ggml.tokens``: the vocabulary in id order, ids missing from the
  tokenizer filled with ``[PAD<id>]`` (type UNUSED) up to config.json's vocab_size;
* ``tokenizer.ggml.token_type``: NORMAL, CONTROL for special added tokens (and added
  tokens that look special, ``<|...|>``), USER_DEFINED for the other added tokens;
  non-normalized added tokens are round-tripped through the tokenizer first;
* ``tokenizer.ggml.merges``: ``"a b"`` strings (spaces inside a part encoded as U+0120);
* special token ids: tokenizer_config.json's ``<typ>_token`` matched against
  tokenizer.json's added tokens, then config.json's ``<typ>_token_id``;
* add_bos / add_eos from tokenizer.json's post-processor, then tokenizer_config.json;
* ``tokenizer.chat_template`` from tokenizer_config.json or chat_template.jinja/.json.

One deliberate difference: the converter leaves ``add_bos_token`` unset when it cannot
tell (and, for llama with a 49152-token vocabulary, forces it to false: a Granite
workaround). Here add_bos/add_eos are always written, false unless the tokenizer
adds the token, so llama.cpp tokenizes exactly as transformers does whatever its
per-pre-tokenizer defaults are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from pytest_groundtruth.ggufio.names import GGUFExportError

SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# Keys newer than the gguf package (llama.cpp's vendored gguf-py has them).
NORMALIZER_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
NORMALIZER_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"


@dataclass
class TokenizerMeta:
    model: str
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int] = field(default_factory=dict)
    add_special: dict[str, bool] = field(default_factory=dict)
    chat_template: str | list[dict[str, str]] | None = None
    add_space_prefix: bool | None = None
    normalizer_lowercase: bool | None = None
    normalizer_strip_accents: bool | None = None

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        """Write the metadata in the converter's order."""
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        if self.merges:
            writer.add_token_merges(self.merges)
        for typ, token_id in self.special_ids.items():
            # gguf has no key for some types (cls): the converter skips them too
            handler = getattr(writer, f"add_{typ}_token_id", None)
            if handler is not None:
                handler(token_id)
        for typ, value in self.add_special.items():
            getattr(writer, f"add_add_{typ}_token")(value)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)
        if self.normalizer_lowercase is not None:
            writer.add_bool(NORMALIZER_LOWERCASE, self.normalizer_lowercase)
        if self.normalizer_strip_accents is not None:
            writer.add_bool(NORMALIZER_STRIP_ACCENTS, self.normalizer_strip_accents)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GGUFExportError(f"{path}: unreadable ({exc})") from exc


def looks_special(token: str) -> bool:
    """``TextModel.does_token_look_special``: added tokens that ought to be CONTROL."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def tokenizer_problem(model_dir: Path) -> str | None:
    """Why our exporter cannot write ``model_dir``'s tokenizer (the sentence
    :func:`load` raises), or None when its kind is one it writes; cheap: reads
    tokenizer.json only."""
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        return (f"{tokenizer_file}: missing; only tokenizer.json (byte-level BPE) tokenizers "
                "can be exported")
    try:
        data = _read_json(tokenizer_file)
    except GGUFExportError as exc:
        return str(exc)
    bpe = (data.get("model") if isinstance(data, dict) else None) or {}
    if not isinstance(bpe, dict):
        return f"{tokenizer_file}: field 'model' is not an object"
    if bpe.get("type") != "BPE" or bpe.get("byte_fallback"):
        kind = "byte-fallback (SentencePiece) BPE" if bpe.get("byte_fallback") else bpe.get("type")
        return (f"{tokenizer_file}: field 'model.type' is {kind!r}; only GPT-2-style byte-level "
                "BPE tokenizers are exported (tokenizer.ggml.model 'gpt2')")
    return None


def load(
    model_dir: Path,
    config: Mapping[str, Any],
    vocab_size: int,
    tokenizer_pre: str,
    model_type: str,
) -> TokenizerMeta:
    """The tokenizer metadata of ``model_dir`` (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import Tokenizer

    tokenizer_file = model_dir / "tokenizer.json"
    problem = tokenizer_problem(model_dir)
    if problem:
        raise GGUFExportError(problem)
    tokenizer_json = _read_json(tokenizer_file)
    bpe = tokenizer_json.get("model") or {}
    config_file = model_dir / "tokenizer_config.json"
    tokenizer_config = _read_json(config_file) if config_file.is_file() else None
    if tokenizer_config is not None and not isinstance(tokenizer_config, dict):
        raise GGUFExportError(f"{config_file}: not a JSON object")

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # the tokenizers library raises its own exception type
        raise GGUFExportError(
            f"{tokenizer_file}: the tokenizers library rejects it ({exc})"
        ) from exc
    tokens, types = _vocab(tokenizer, vocab_size, tokenizer_file)

    meta = TokenizerMeta(
        model="gpt2",
        pre=tokenizer_pre,
        tokens=tokens,
        token_types=types,
        merges=_merges(bpe.get("merges"), tokenizer_file),
    )
    if model_type == "llama" and tokenizer_config is not None:
        add_prefix = tokenizer_config.get("add_prefix_space")
        if isinstance(add_prefix, bool):
            meta.add_space_prefix = add_prefix
    normalizer = tokenizer_json.get("normalizer")
    if isinstance(normalizer, dict):
        _parse_normalizer(meta, normalizer)
    _special_tokens(meta, tokenizer_json, tokenizer_config, config, model_dir, vocab_size)
    return meta


def _vocab(tokenizer: Any, vocab_size: int, source: Path) -> tuple[list[str], list[int]]:
    vocab: dict[str, int] = tokenizer.get_vocab(with_added_tokens=True)
    largest = max(vocab.values())
    if largest >= vocab_size:
        raise GGUFExportError(
            f"{source}: token id {largest} does not fit config.json's vocab_size {vocab_size}"
        )
    reverse = {token_id: token for token, token_id in vocab.items()}
    added = tokenizer.get_added_tokens_decoder()
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
            continue
        token = reverse[i]
        if i in added:
            entry = added[i]
            if not entry.normalized:
                # llama.cpp assumes CONTROL and USER_DEFINED tokens are pre-normalized
                ids = tokenizer.encode(token, add_special_tokens=False).ids
                token = tokenizer.decode(ids, skip_special_tokens=False)
            if entry.special or looks_special(token):
                types.append(int(gguf.TokenType.CONTROL))
            else:
                token = token.replace("\u2581", " ")  # pre-normalize user-defined spaces
                types.append(int(gguf.TokenType.USER_DEFINED))
        else:
            types.append(int(gguf.TokenType.NORMAL))
        tokens.append(token)
    return tokens, types


def _merges(merges: Any, source: Path) -> list[str]:
    if not isinstance(merges, list) or not merges:
        raise GGUFExportError(f"{source}: field 'model.merges' is missing or empty")
    if all(isinstance(m, str) for m in merges):
        return list(merges)
    if all(
        isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m) for m in merges
    ):
        # transformers >= 4.45 format; spaces inside a part are encoded as U+0120
        return [
            " ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
            for pair in merges
        ]
    raise GGUFExportError(f"{source}: field 'model.merges' has an unknown format")


def _parse_normalizer(meta: TokenizerMeta, normalizer: Mapping[str, Any]) -> None:
    kind = normalizer.get("type")
    if kind == "Lowercase":
        meta.normalizer_lowercase = True
    elif kind == "StripAccents":
        meta.normalizer_strip_accents = True
    elif kind == "BertNormalizer":
        if "lowercase" in normalizer:
            meta.normalizer_lowercase = bool(normalizer["lowercase"])
        if "strip_accents" in normalizer and normalizer["strip_accents"] is not None:
            meta.normalizer_strip_accents = bool(normalizer["strip_accents"])
    elif kind == "Sequence":
        for inner in normalizer.get("normalizers", []):
            if isinstance(inner, dict):
                _parse_normalizer(meta, inner)


def _content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return str(entry["content"])
    return None


def _special_tokens(
    meta: TokenizerMeta,
    tokenizer_json: Mapping[str, Any],
    tokenizer_config: dict[str, Any] | None,
    config: Mapping[str, Any],
    model_dir: Path,
    vocab_size: int,
) -> None:
    """SpecialVocab._try_load_from_tokenizer_json + _try_load_from_config_json."""
    added_tokens = [t for t in tokenizer_json.get("added_tokens") or [] if isinstance(t, dict)]
    types = list(SPECIAL_TYPES)
    tc = dict(tokenizer_config) if tokenizer_config is not None else None
    special = {
        typ: _content((tc or {}).get(f"{typ}_token")) for typ in ("bos", "cls", "eos", "sep")
    }
    if tc is not None:
        if not special["bos"] and special["cls"]:
            tc["bos_token"] = special["bos"] = special["cls"]
        if not special["eos"] and special["sep"]:
            tc["eos_token"] = special["eos"] = special["sep"]

    post = tokenizer_json.get("post_processor")
    processors = post.get("processors", [post]) if isinstance(post, dict) else []
    for processor in processors:
        kind = processor.get("type") if isinstance(processor, dict) else None
        if kind == "ByteLevel":
            meta.add_special.setdefault("bos", False)
            meta.add_special.setdefault("eos", False)
        elif kind == "RobertaProcessing":
            meta.add_special.update(bos=True, eos=True, sep=True)
        elif kind == "TemplateProcessing":
            single = processor.get("single") or []
            if len(single) > 1:
                first = (single[0].get("SpecialToken") or {}).get("id")
                if first:
                    if tc is None:
                        special["bos"] = first
                    elif first not in (special["bos"], special["cls"]) and not special["bos"]:
                        tc["bos_token"] = special["bos"] = first
                    meta.add_special["bos"] = first in (special["bos"], special["cls"])
                last = (single[-1].get("SpecialToken") or {}).get("id")
                if last:
                    if tc is None:
                        special["eos"] = last
                    elif last != special["eos"]:
                        # the converter keeps the old EOS as end-of-turn and uses the last one
                        if "eot" not in types:
                            types.append("eot")
                            tc["eot_token"] = special["eos"]
                        tc["eos_token"] = special["eos"] = last
                    meta.add_special["eos"] = last == special["eos"]

    if tc is not None:
        template: Any = tc.get("chat_template")
        if template is None:
            jinja, as_json = model_dir / "chat_template.jinja", model_dir / "chat_template.json"
            if jinja.is_file():
                template = jinja.read_text(encoding="utf-8")
            elif as_json.is_file():
                template = (_read_json(as_json) or {}).get("chat_template")
        if isinstance(template, (str, list)):
            meta.chat_template = template
        for typ in types:
            add = tc.get(f"add_{typ}_token")
            if isinstance(add, bool) and typ not in meta.add_special:
                meta.add_special[typ] = add
            content = _content(tc.get(f"{typ}_token"))
            if content is None:
                continue
            token_id = next(
                (t.get("id") for t in added_tokens if t.get("content") == content), None
            )
            _set_special(meta, typ, token_id, vocab_size, "tokenizer_config.json")
    for typ in types:
        token_id = config.get(f"{typ}_token_id")
        if token_id is None and isinstance(config.get("text_config"), dict):
            token_id = config["text_config"].get(f"{typ}_token_id")
        _set_special(meta, typ, token_id, vocab_size, "config.json")
    # Always explicit (see the module docstring): llama.cpp must add exactly what HF adds.
    meta.add_special.setdefault("bos", False)
    meta.add_special.setdefault("eos", False)
    meta.add_special = {
        k: meta.add_special[k] for k in ("bos", "eos", "sep") if k in meta.add_special
    }


def _set_special(meta: TokenizerMeta, typ: str, token_id: Any, vocab_size: int, where: str) -> None:
    if not isinstance(token_id, int) or isinstance(token_id, bool) or typ in meta.special_ids:
        return
    if token_id < 0 or token_id >= vocab_size:
        raise GGUFExportError(
            f"{where}: {typ} token id {token_id} is outside the vocabulary (size {vocab_size})"
        )
    meta.special_ids[typ] = token_id
