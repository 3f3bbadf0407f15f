"""What a runtime is judged against: prompts, the evaluation text, oracles and bounds.

Everything here is read from the user's files (prompts, oracle JSON, configuration);
nothing runs an engine. :meth:`Inputs.decode` shows a token id as text with the model's
own tokenizer (``tokenizer.json``, through ``tokenizers``) for failure tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pytest_groundtruth.config.prompts import Prompt, load_prompts
from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.models.chat_template import chat_template_problem
from pytest_groundtruth.models.content import weights_change
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.oracle.format import (
    Oracle,
    StaleOracle,
    load_oracle,
    load_perplexity,
    oracle_path,
    provenance_problem,
    regenerate_command,
)
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

    def answerable(self, slug: str) -> list[str]:
        """The prompt names that apply to model ``slug``: every plain prompt, and the chat
        prompts where the model has a chat template (per-artifact suites pool these)."""
        if not any(p.is_chat for p in self.prompts.values()):
            return list(self.prompts)
        path = self._model(slug).path
        return [n for n, p in self.prompts.items()
                if not p.is_chat or chat_template_problem(path, slug, n) is None]

    @cached_property
    def eval_text(self) -> tuple[Path, str]:
        path = self.settings.path(self.settings.eval_text)
        return path, path.read_text(encoding="utf-8")

    def oracle(self, slug: str, prompt: str, precision: str = "float32",
               device: str = "cpu", needs: Sequence[str] = ()) -> Oracle:
        """The oracle of ``slug`` on ``prompt``, checked to be the reference for this run:
        the same model and weights, the prompt as the prompt file says it now, the same
        generation length; else :class:`StaleOracle` with the command that regenerates it.

        ``needs``: fields the caller will read beyond the original workflow's (``topk``,
        ``prompt_tokens``, ...). An oracle in the original format lacks them and raises
        :class:`~pytest_groundtruth.oracle.format.OracleIncomplete` here, which skips the
        test with the reason before any engine runs (reading a missing field later
        raises the same).
        """
        key = (slug, prompt, precision, device)
        if key not in self._oracles:
            root = self.settings.path(self.settings.oracle_dir)
            path = oracle_path(root, slug, prompt, precision, device)
            asked = self.prompts[prompt]
            if asked.is_chat and not path.is_file():
                problem = chat_template_problem(self._model(slug).path, slug, prompt)
                if problem:  # not applicable to this model: a skip, not a missing oracle
                    raise RuntimeUnavailable(problem)
            oracle = load_oracle(path)
            model = self._model(slug)
            problem = provenance_problem(oracle, slug, model.fingerprint,
                                         asked.text, self.settings.max_new_tokens,
                                         tuple((m.role, m.content) for m in asked.messages))
            if problem:
                raise StaleOracle(f"{path} is stale: {problem}{self._weights(oracle, model)}; "
                                  "regenerate it: "
                                  f"`{regenerate_command(slug, prompt, precision, device)}`")
            self._oracles[key] = oracle
        self._oracles[key].require(*needs)
        return self._oracles[key]

    def _weights(self, oracle: Oracle, model: ResolvedModel) -> str:
        """For an oracle of other weights: which tensors differ, and the command that says
        whether the tokens moved."""
        old = oracle.model_fingerprint
        if old is None or old == model.fingerprint or oracle.slug != model.slug:
            return ""
        return (f": {weights_change(model.path.parent, old, model.path)}; whether the tokens "
                f"moved: `groundtruth oracle --check --tolerance --model {model.slug}`")

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
