"""Prompts: ``<prompts_dir>/*.txt`` and chat prompts ``<prompts_dir>/chat/*.json``.

A plain prompt is one UTF-8 file, ``.strip()``-ped (the original workflow's rule, so a
trailing newline added by an editor does not change the prompt). A chat prompt is a JSON
list of messages, ``[{"role": "system" | "user" | "assistant", "content": "..."}]``: the
oracle renders it with the model's chat template (generation prompt added) and every
runtime with its own (llama.cpp: the GGUF's ``tokenizer.chat_template``; a server:
``/v1/chat/completions``). Prompts are keyed by file stem, unique across both kinds.
Other subdirectories are not prompts (``prompts/eval/`` holds the perplexity text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.core.failures import InputError
from pytest_groundtruth.oracle.format import CHAT_DIR

ROLES = ("system", "user", "assistant")


class PromptError(InputError, ValueError):
    """A prompt file is unusable; the message names the file."""


@dataclass(frozen=True)
class Message:
    """One turn of a chat prompt."""

    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str  # a plain prompt's text; a chat prompt's messages, one "role: content" per line
    path: Path
    messages: tuple[Message, ...] = ()  # set for a chat prompt

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not valid UTF-8 ({exc})") from exc


def _check_name(path: Path) -> None:
    if not all(c.isalnum() or c in "-_" for c in path.stem):
        raise PromptError(
            f"{path}: a prompt name (file stem) may hold only letters, digits, '-' and '_'"
        )


def read_messages(path: Path) -> tuple[Message, ...]:
    """A chat prompt file: a non-empty JSON list of ``{"role", "content"}`` objects."""
    try:
        data = json.loads(_read(path))
    except ValueError as exc:
        raise PromptError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise PromptError(f"{path}: a chat prompt is a non-empty JSON list of messages "
                          '[{"role": "user", "content": "..."}]')
    messages = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            raise PromptError(f"{path}: message {i} must be an object with exactly the keys "
                              "'role' and 'content'")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            raise PromptError(f"{path}: message {i}: role {role!r} is not one of "
                              f"{', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise PromptError(f"{path}: message {i}: 'content' must be a non-empty string")
        messages.append(Message(role, content))
    return tuple(messages)


def load_prompts(directory: Path, names: list[str] | None = None) -> list[Prompt]:
    """All prompts in ``directory`` (plain, then chat; each sorted by name), or the
    ``names`` asked for."""
    if not directory.is_dir():
        raise PromptError(f"prompts directory {directory} does not exist")
    found: dict[str, Prompt] = {}
    for path in sorted(directory.glob("*.txt")):
        text = _read(path).strip()
        if not text:
            raise PromptError(f"{path}: the prompt is empty")
        _check_name(path)
        found[path.stem] = Prompt(path.stem, text, path)
    for path in sorted((directory / CHAT_DIR).glob("*.json")):
        _check_name(path)
        if path.stem in found:
            raise PromptError(f"{path}: the name {path.stem!r} is taken by "
                              f"{found[path.stem].path}; prompt names are unique")
        messages = read_messages(path)
        text = "\n".join(f"{m.role}: {m.content}" for m in messages)
        found[path.stem] = Prompt(path.stem, text, path, messages)
    if not found:
        raise PromptError(f"prompts directory {directory} has no *.txt files (nor "
                          f"{CHAT_DIR}/*.json chat prompts)")
    if names is None:
        return list(found.values())
    missing = [n for n in names if n not in found]
    if missing:
        raise PromptError(
            f"prompt(s) {', '.join(missing)} not found in {directory} "
            f"(have: {', '.join(found)})"
        )
    return [found[n] for n in names]
