"""``groundtruth oracle``: generate the oracle files with the float32 transformers reference.

One runner per model; per prompt a greedy generation with its top-k log-probabilities,
and per model one perplexity record of the evaluation text. What is written, and when,
is :func:`pytest_groundtruth.oracle.files.reconcile`'s decision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from pytest_groundtruth.config.prompts import Prompt
from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.oracle.files import OracleChange, reconcile
from pytest_groundtruth.oracle.format import (
    NEAR_TIE_MARGIN,
    PPL_SCHEMA,
    Oracle,
    oracle_path,
    perplexity_path,
)
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.hf import TransformersRunner, library_versions


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
        gen = runner.chat(prompt.messages, max_new_tokens, top_k=top_k)
    else:
        text, gen = prompt.text, runner.generate(prompt.text, max_new_tokens, top_k=top_k)
    assert gen.topk is not None
    versions = library_versions()
    return Oracle(
        slug=model.slug,
        model=model.spec.location if model.spec.scheme == "hf" else model.spec.source,
        prompt_name=prompt.name,
        prompt=text,
        prompt_tokens=gen.prompt_tokens,
        tokens=gen.tokens,
        text=gen.text,
        stop_reason=gen.stop_reason,
        eos_token_ids=tuple(runner.eos),
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        steps=tuple(
            TopK(t.ids, tuple(round(x, 6) for x in t.logprobs)) for t in gen.topk
        ),
        model_fingerprint=model.fingerprint,
        dtype=runner.artifact.quant,
        device=runner.device,
        near_tie_margin=NEAR_TIE_MARGIN,
        versions={
            "transformers_version": versions["transformers"],
            "torch_version": versions["torch"],
        },
        gpu=gpu or {},
        messages=tuple((m.role, m.content) for m in prompt.messages),
    )


def perplexity_record(
    runner: TransformersRunner, model: ResolvedModel, text_file: Path, root: Path
) -> str:
    text = text_file.read_text(encoding="utf-8")
    result = runner.perplexity(text)
    versions = library_versions()
    try:
        shown = text_file.relative_to(root)
    except ValueError:
        shown = text_file
    data = {
        "schema": PPL_SCHEMA,
        "slug": model.slug,
        "model_fingerprint": model.fingerprint,
        "text_file": str(shown),
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "dtype": runner.artifact.quant,
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
) -> Iterator[OracleChange]:
    """Regenerate the oracles of ``models`` x ``prompts``; yield one change per file."""
    from tqdm import tqdm


    models = list(models)
    bar = tqdm(total=len(models) * (len(prompts) + 1), disable=not progress, unit="file",
               desc="oracles")
    for model in models:
        artifact = Artifact("transformers", model.slug, precision, model.path,
                            model.fingerprint, "oracle")
        gpu = gpu_fields(precision) if device.startswith("cuda") else None
        with TransformersRunner(artifact, device, model.spec.trust_remote_code) as runner:
            for prompt in prompts:
                bar.set_postfix_str(f"{model.slug}/{prompt.name}")
                oracle = make_oracle(runner, model, prompt, max_new_tokens, top_k, gpu)
                path = oracle_path(oracle_root, model.slug, prompt.name, precision, device)
                yield reconcile(path, oracle.to_json(), force, check,
                                runner.tokenizer.decode, tolerance)
                bar.update()
            if device == "cpu" and precision == "float32":
                text = perplexity_record(runner, model, eval_text, root)
                yield reconcile(perplexity_path(oracle_root, model.slug), text, force,
                                check, tolerance=tolerance)
            bar.update()
    bar.close()
