"""Whether a model can render chat prompts: its tokenizer's chat template.

A chat prompt (``prompts/chat/*.json``) is rendered with the model's own chat template
(``tokenizer_config.json``'s ``chat_template``, or ``chat_template.jinja`` /
``chat_template.json`` beside it, as transformers reads them). A base model, or one
converted from a GGUF without ``tokenizer.chat_template``, has none: its chat prompts are
not applicable, so ``groundtruth oracle`` writes no oracle for them and their tests skip
with :func:`chat_template_problem`'s sentence, while every plain prompt runs.
"""

from __future__ import annotations

import json
from pathlib import Path


def has_chat_template(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict) and config.get("chat_template"):
        return True
    if (model_dir / "chat_template.jinja").is_file():
        return True
    try:
        table = json.loads((model_dir / "chat_template.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(table, dict) and bool(table.get("chat_template"))


def chat_template_problem(model_dir: Path, slug: str, prompt: str) -> str | None:
    """Why chat prompt ``prompt`` does not apply to model ``slug``, or None when it does."""
    if has_chat_template(model_dir):
        return None
    return (f"model {slug!r} has no chat template (no chat_template in {model_dir}/"
            f"tokenizer_config.json, no chat_template.jinja): chat prompt {prompt!r} cannot "
            "be rendered for it, so it has no oracle; a base model answers the plain prompts")
