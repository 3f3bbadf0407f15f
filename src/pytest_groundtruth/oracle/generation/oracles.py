"""``groundtruth oracle``: generate the oracle files with the float32 transformers reference.

One runner per model; per prompt a greedy generation with its top-k log-probabilities,
and per model one perplexity record of the evaluation text. What is written, and when,
is :func:`pytest_groundtruth.oracle.files.reconcile`'s decision.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from pytest_groundtruth.config.prompts import Prompt
from pytest_groundtruth.core.failures import InputError
from pytest_groundtruth.core.memory import trim_heap
from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.models.chat_template import chat_template_problem
from pytest_groundtruth.models.content import weights_change
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.oracle.files import OracleChange, reconcile
from pytest_groundtruth.oracle.format import (
    LOGPROB_DECIMALS,
    NEAR_TIE_MARGIN,
    PPL_SCHEMA,
    Oracle,
    oracle_path,
    perplexity_path,
)
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.hf import (
    SEED,
    MemoryBudget,
    TransformersRunner,
    library_versions,
)
from pytest_groundtruth.store.pool import close_open_runners


def make_oracle(
    runner: TransformersRunner,
    model: ResolvedModel,
    prompt: Prompt,
    max_new_tokens: int,
    top_k: int,
    gpu: dict[str, str] | None = None,
) -> Oracle:
    if prompt.is_chat:  # rendered with the model's chat template, generation prompt added
        text, _ = runner.render_chat(prompt.messages)
        check_fits(runner, model, prompt, text, max_new_tokens)
        gen = runner.chat(prompt.messages, max_new_tokens, top_k=top_k)
    else:
        text = prompt.text
        check_fits(runner, model, prompt, text, max_new_tokens)
        gen = runner.generate(text, max_new_tokens, top_k=top_k)
    assert gen.topk is not None
    versions = library_versions()
    return Oracle(
        slug=model.slug,
        model=model_id(model),
        prompt_name=prompt.name,
        prompt=text,
        tokens=gen.tokens,
        text=gen.text,
        max_new_tokens=max_new_tokens,
        dtype=runner.artifact.quant,
        device=runner.device,
        versions={
            "transformers_version": versions["transformers"],
            "torch_version": versions["torch"],
        },
        gpu=gpu or {},
        source=model.spec.source,
        model_fingerprint=model.fingerprint,
        seed=SEED,
        prompt_ids=gen.prompt_tokens,
        stop_reason=gen.stop_reason,
        eos_token_ids=tuple(runner.eos),
        topk=tuple(
            TopK(t.ids, tuple(round(x, LOGPROB_DECIMALS) for x in t.logprobs))
            for t in gen.topk
        ),
        near_tie_margin=NEAR_TIE_MARGIN,
        messages=tuple((m.role, m.content) for m in prompt.messages),
    )


def model_id(model: ResolvedModel) -> str:
    """The oracle's ``model``: the Hugging Face id, else the source URI (tiny, local)."""
    return model.spec.hub_id or model.spec.source


class PromptTooLong(InputError):
    """A prompt and the tokens to generate do not fit the model's context."""


def check_fits(runner: TransformersRunner, model: ResolvedModel, prompt: Prompt, text: str,
               max_new_tokens: int) -> None:
    """Refuse a prompt that, with ``max_new_tokens``, exceeds the model's trained context:
    past it the reference itself is extrapolating, and its tokens are no oracle."""
    limit = runner.context_length
    n = len(runner.tokenize(text))
    if limit is not None and n + max_new_tokens > limit:
        raise PromptTooLong(
            f"{prompt.path}: {n} prompt tokens + max_new_tokens {max_new_tokens} = "
            f"{n + max_new_tokens} positions exceed model {model.slug!r}'s context of {limit} "
            "(max_position_embeddings); shorten the prompt"
        )


def read_eval_text(text_file: Path) -> str:
    try:
        return text_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"evaluation text {text_file} does not exist (key 'eval_text')"
                         ) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"evaluation text {text_file} cannot be read as UTF-8 ({exc})"
                         ) from None


def perplexity_record(
    runner: TransformersRunner, model: ResolvedModel, text_file: Path, root: Path
) -> str:
    text = read_eval_text(text_file)
    result = runner.perplexity(text)
    versions = library_versions()
    try:
        shown = text_file.relative_to(root)
    except ValueError:
        shown = text_file
    data = {
        "schema": PPL_SCHEMA,
        "model": model_id(model),
        "model_slug": model.slug,
        "source": model.spec.source,
        "model_fingerprint": model.fingerprint,
        "text_file": str(shown),
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "format": runner.artifact.quant,
        "device": runner.device,
        "perplexity": round(result.perplexity, 6),
        "cross_entropy": round(result.cross_entropy, 6),
        "tokens_evaluated": result.tokens_evaluated,
        "transformers_version": versions["transformers"],
        "torch_version": versions["torch"],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def gpu_fields(precision: str) -> dict[str, str]:
    import torch

    return {
        "precision": precision,
        "cuda_version": str(torch.version.cuda),
        "gpu_name": torch.cuda.get_device_name(0),
    }


class WeightsChange:
    """Adds to a changed file's detail how the model's weights differ from those the file
    was generated from, when its ``model_fingerprint`` is not the model's (worked out once
    per fingerprint: it may compare every tensor of two builds)."""

    def __init__(self, model: ResolvedModel) -> None:
        self.model = model
        self._said: dict[str, str] = {}

    def explain(self, path: Path, change: OracleChange) -> OracleChange:
        if change.status not in ("changed", "noise", "unreadable") or not path.is_file():
            return change
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("model_fingerprint")
        except (OSError, ValueError, AttributeError):
            return change
        if not isinstance(old, str) or old == self.model.fingerprint:
            return change
        if old not in self._said:
            self._said[old] = weights_change(self.model.path.parent, old, self.model.path)
        said = f"other weights: {self._said[old]}"
        return replace(change, detail=f"{said}; {change.detail}" if change.detail else said)


def build_all(
    models: Iterable[ResolvedModel],
    prompts: list[Prompt],
    oracle_root: Path,
    eval_text: Path,
    root: Path,
    *,
    max_new_tokens: int,
    top_k: int,
    device: str = "cpu",
    precision: str = "float32",
    force: bool = False,
    check: bool = False,
    tolerance: float | None = None,
    progress: bool = True,
    budget: MemoryBudget | None = None,
    perplexity: bool = True,
) -> Iterator[OracleChange]:
    """Regenerate the oracles of ``models`` x ``prompts``; yield one change per file
    (with ``perplexity``, each model's perplexity record too).

    ``budget``: a model larger than it is loaded with disk offload (identical tokens).

    The progress bar is drawn only on a terminal: in CI logs and pipes it would be a
    stream of carriage-return frames, and the caller prints a line per file anyway.
    """
    from tqdm import tqdm

    models = list(models)
    bar = tqdm(total=len(models) * (len(prompts) + perplexity), unit="file", desc="oracles",
               disable=not (progress and sys.stderr.isatty()))
    for model in models:
        artifact = Artifact("transformers", model.slug, precision, model.path,
                            model.fingerprint, "oracle")
        gpu = gpu_fields(precision) if device.startswith("cuda") else None
        if close_open_runners():  # a model open in a pool of this process would sit beside
            trim_heap()
        with TransformersRunner(artifact, device, model.spec.trust_remote_code,
                                budget=budget) as runner:
            weights = WeightsChange(model)
            for prompt in prompts:
                bar.set_postfix_str(f"{model.slug}/{prompt.name}")
                path = oracle_path(oracle_root, model.slug, prompt.name, precision, device)
                problem = (chat_template_problem(model.path, model.slug, prompt.name)
                           if prompt.is_chat else None)
                if problem:  # not applicable: the other prompts and the text still run
                    yield OracleChange(path, "skipped", problem)
                    bar.update()
                    continue
                oracle = make_oracle(runner, model, prompt, max_new_tokens, top_k, gpu)
                yield weights.explain(path, reconcile(path, oracle.to_json(), force, check,
                                                      runner.tokenizer.decode, tolerance))
                bar.update()
            if perplexity and device == "cpu" and precision == "float32":
                text = perplexity_record(runner, model, eval_text, root)
                path = perplexity_path(oracle_root, model.slug)
                yield weights.explain(path, reconcile(path, text, force, check,
                                                      tolerance=tolerance))
                bar.update()
    bar.close()
