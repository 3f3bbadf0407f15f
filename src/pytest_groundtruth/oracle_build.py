"""Generate oracle files with the transformers reference and write them safely.

Regenerating on the same machine reproduces the files byte for byte. An existing file
whose content would change is left alone unless ``force`` is set; either way the
result says which files changed and how (first differing token, or which fields).
Another machine's float32 kernels move log-probabilities in the sixth decimal: a
tolerance classifies such changes as noise (:mod:`pytest_groundtruth.oracle_diff`).
Every write is atomic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_groundtruth.atomic import atomic_write_text
from pytest_groundtruth.oracle_diff import compare_texts
from pytest_groundtruth.oracle_format import (
    NEAR_TIE_MARGIN,
    Oracle,
    OracleError,
    OracleStep,
    load_oracle,
    oracle_path,
)

if TYPE_CHECKING:
    from pytest_groundtruth.prompts import Prompt
    from pytest_groundtruth.runtimes.hf import TransformersRunner
    from pytest_groundtruth.sources import ResolvedModel

PPL_SCHEMA = "pytest-groundtruth/oracle-perplexity/1"


@dataclass(frozen=True)
class OracleChange:
    path: Path
    status: str  # "new" | "unchanged" | "noise" | "changed" | "unreadable"
    detail: str = ""
    written: bool = False


def make_oracle(
    runner: TransformersRunner,
    model: ResolvedModel,
    prompt: Prompt,
    max_new_tokens: int,
    top_k: int,
    gpu: dict[str, str] | None = None,
) -> Oracle:
    from pytest_groundtruth.runtimes.hf import library_versions

    gen = runner.generate(prompt.text, max_new_tokens, top_k=top_k)
    assert gen.topk is not None
    versions = library_versions()
    return Oracle(
        slug=model.slug,
        model=model.spec.location if model.spec.scheme == "hf" else model.spec.source,
        prompt_name=prompt.name,
        prompt=prompt.text,
        prompt_tokens=gen.prompt_tokens,
        tokens=gen.tokens,
        text=gen.text,
        stop_reason=gen.stop_reason,
        eos_token_ids=tuple(runner.eos),
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        steps=tuple(
            OracleStep(t.ids, tuple(round(x, 6) for x in t.logprobs)) for t in gen.topk
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
    )


def reconcile(path: Path, new_text: str, force: bool, check: bool, decode: Any = None,
              tolerance: float | None = None) -> OracleChange:
    """Compare ``new_text`` with the file at ``path``; write it when allowed.

    With a ``tolerance`` (nats), a change that is only numeric noise within it (see
    :mod:`pytest_groundtruth.oracle_diff`) is reported as ``noise`` and keeps the file.
    """
    if not path.is_file():
        write = not check
        if write:
            atomic_write_text(path, new_text)
        return OracleChange(path, "new", written=write)
    old_text = path.read_text(encoding="utf-8")
    if old_text == new_text:
        return OracleChange(path, "unchanged")
    try:
        if "topk" in json.loads(new_text):
            load_oracle(path)
        else:
            load_perplexity(path)
    except OracleError as exc:
        detail, status = str(exc), "unreadable"
    else:
        difference = compare_texts(old_text, new_text, decode)
        detail = difference.detail
        noise = tolerance is not None and difference.within(tolerance)
        status = "noise" if noise else "changed"
    write = force and not check
    if write:
        atomic_write_text(path, new_text)
    return OracleChange(path, status, detail, written=write)


def perplexity_record(
    runner: TransformersRunner, model: ResolvedModel, text_file: Path, root: Path
) -> str:
    from pytest_groundtruth.runtimes.hf import library_versions

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


def perplexity_path(oracle_root: Path, slug: str) -> Path:
    return oracle_root / slug / "eval" / "perplexity.json"


def load_perplexity(path: Path) -> dict[str, Any]:
    """The oracle perplexity record, validated."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OracleError(f"{path}: missing; generate it with `groundtruth oracle`") from None
    except ValueError as exc:
        raise OracleError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != PPL_SCHEMA:
        raise OracleError(f"{path}: field 'schema': expected {PPL_SCHEMA!r}")
    for key, kind in (("perplexity", float), ("text_sha256", str), ("tokens_evaluated", int)):
        if not isinstance(data.get(key), kind):
            raise OracleError(f"{path}: field {key!r}: missing or not a {kind.__name__}")
    return data


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

    from pytest_groundtruth.runtimes.base import Artifact
    from pytest_groundtruth.runtimes.hf import TransformersRunner

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
