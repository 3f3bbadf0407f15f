"""Prompts: ``<prompts_dir>/*.txt``, one prompt per file, keyed by the file stem.

Each file is read as UTF-8 and ``.strip()``-ped (the original workflow's rule, so a
trailing newline added by an editor does not change the prompt). Subdirectories are
not prompts (``prompts/eval/`` holds the perplexity text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_groundtruth.core.failures import InputError


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


def load_prompts(directory: Path, names: list[str] | None = None) -> list[Prompt]:
    """All prompts in ``directory`` sorted by name, or the ``names`` asked for."""
    if not directory.is_dir():
        raise PromptError(f"prompts directory {directory} does not exist")
    found: dict[str, Prompt] = {}
    for path in sorted(directory.glob("*.txt")):
        try:
            text = path.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as exc:
            raise PromptError(f"{path}: not valid UTF-8 ({exc})") from exc
        if not text:
            raise PromptError(f"{path}: the prompt is empty")
        if not all(c.isalnum() or c in "-_" for c in path.stem):
            raise PromptError(
                f"{path}: a prompt name (file stem) may hold only letters, digits, '-' and '_'"
            )
        found[path.stem] = Prompt(path.stem, text, path)
    if not found:
        raise PromptError(f"prompts directory {directory} has no *.txt files")
    if names is None:
        return list(found.values())
    missing = [n for n in names if n not in found]
    if missing:
        raise PromptError(
            f"prompt(s) {', '.join(missing)} not found in {directory} "
            f"(have: {', '.join(found)})"
        )
    return [found[n] for n in names]
