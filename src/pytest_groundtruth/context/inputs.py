"""What a runtime is judged against: prompts, the evaluation text, oracles and bounds.

Everything here is read from the user's files (prompts, oracle JSON, configuration);
nothing runs an engine. :meth:`Inputs.decode` shows a token id as text with the model's
own tokenizer (``tokenizer.json``, through ``tokenizers``) for failure tables.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from pytest_groundtruth.config.prompts import Prompt, load_prompts
from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.oracle.format import Oracle, load_oracle, load_perplexity, oracle_path
from pytest_groundtruth.oracle.format import perplexity_path as oracle_perplexity_path


class Inputs:
    def __init__(self, settings: Settings, model: Callable[[str], ResolvedModel]) -> None:
        self.settings = settings
        self._model = model
        self._oracles: dict[tuple[str, str, str, str], Oracle] = {}
        self._decoders: dict[str, Any] = {}

    @cached_property
    def prompts(self) -> dict[str, Prompt]:
        names = list(self.settings.prompts) if self.settings.prompts else None
        return {p.name: p for p in load_prompts(self.settings.path(self.settings.prompts_dir),
                                                names)}

    @cached_property
    def eval_text(self) -> tuple[Path, str]:
        path = self.settings.path(self.settings.eval_text)
        return path, path.read_text(encoding="utf-8")

    def oracle(self, slug: str, prompt: str, precision: str = "float32",
               device: str = "cpu") -> Oracle:
        key = (slug, prompt, precision, device)
        if key not in self._oracles:
            root = self.settings.path(self.settings.oracle_dir)
            self._oracles[key] = load_oracle(oracle_path(root, slug, prompt, precision, device))
        return self._oracles[key]

    def oracle_perplexity(self, slug: str) -> dict[str, Any]:
        root = self.settings.path(self.settings.oracle_dir)
        return load_perplexity(oracle_perplexity_path(root, slug))

    def _tokenizer(self, slug: str) -> Any:
        if slug not in self._decoders:
            from tokenizers import Tokenizer

            path = self._model(slug).path / "tokenizer.json"
            self._decoders[slug] = Tokenizer.from_file(str(path))
        return self._decoders[slug]

    def decode(self, slug: str, token: int) -> str:
        """One token's text, special tokens shown (for tables)."""
        text: str = self._tokenizer(slug).decode([token], skip_special_tokens=False)
        return text

    def special_ids(self, slug: str) -> frozenset[int]:
        """The ids of the model's special tokens (pad, unk, eos, ...)."""
        added = self._tokenizer(slug).get_added_tokens_decoder()
        return frozenset(int(i) for i, token in added.items() if token.special)
