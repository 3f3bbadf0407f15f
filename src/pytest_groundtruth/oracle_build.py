"""Generate oracle files with the transformers reference and write them safely.

Regenerating on the same machine reproduces the files byte for byte. An existing file
whose content would change is left alone unless ``force`` is set; either way the
result says which files changed and how (first differing token, or which fields).
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
    status: str  # "new" | "unchanged" | "changed" | "unreadable"
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


def describe_change(old: Oracle, new: Oracle, decode: Any = None) -> str:
    """One line saying how ``new`` differs from ``old`` (first differing token first)."""

    def show(token: int | None) -> str:
        if token is None:
            return "(end)"
        return f"{token} {decode([token])!r}" if decode else str(token)

    if old.tokens != new.tokens:
        n = min(len(old.tokens), len(new.tokens))
        pos = next((i for i in range(n) if old.tokens[i] != new.tokens[i]), n)
        before = old.tokens[pos] if pos < len(old.tokens) else None
        after = new.tokens[pos] if pos < len(new.tokens) else None
        return (
            f"tokens differ first at position {pos}: committed {show(before)} -> "
            f"regenerated {show(after)} ({len(old.tokens)} -> {len(new.tokens)} tokens)"
        )
    if old.prompt_tokens != new.prompt_tokens:
        return f"prompt tokens differ: {list(old.prompt_tokens)} -> {list(new.prompt_tokens)}"
    worst, where = 0.0, -1
    for i, (a, b) in enumerate(zip(old.steps, new.steps, strict=False)):
        if a.ids != b.ids:
            return f"tokens identical; top-k ids differ at position {i}"
        delta = max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=False))
        if delta > worst:
            worst, where = delta, i
    if worst:
        return (
            f"tokens identical; top-k log-probabilities differ by up to {worst:.2g} "
            f"(position {where})"
        )
    old_data, new_data = json.loads(old.to_json()), json.loads(new.to_json())
    fields = [k for k in new_data if old_data.get(k) != new_data[k]]
    return "fields changed: " + ", ".join(
        f"{k} ({old_data.get(k)!r} -> {new_data[k]!r})" for k in fields
    )


def reconcile(path: Path, new_text: str, new: Oracle | None, force: bool, check: bool,
              decode: Any = None) -> OracleChange:
    """Compare ``new_text`` with the file at ``path``; write it when allowed."""
    if path.is_file():
        old_text = path.read_text(encoding="utf-8")
        if old_text == new_text:
            return OracleChange(path, "unchanged")
        try:
            detail = (
                describe_change(load_oracle(path), new, decode) if new is not None
                else _json_diff(old_text, new_text)
            )
            status = "changed"
        except OracleError as exc:
            detail, status = str(exc), "unreadable"
        write = force and not check
    else:
        detail, status, write = "", "new", not check
    if write:
        atomic_write_text(path, new_text)
    return OracleChange(path, status, detail, written=write)


def _json_diff(old_text: str, new_text: str) -> str:
    try:
        old, new = json.loads(old_text), json.loads(new_text)
    except ValueError as exc:
        return f"unreadable: {exc}"
    return "fields changed: " + ", ".join(
        f"{k} ({old.get(k)!r} -> {new[k]!r})" for k in new if old.get(k) != new[k]
    )


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
                yield reconcile(path, oracle.to_json(), oracle, force, check,
                                runner.tokenizer.decode)
                bar.update()
            if device == "cpu" and precision == "float32":
                text = perplexity_record(runner, model, eval_text, root)
                yield reconcile(perplexity_path(oracle_root, model.slug), text, None, force,
                                check)
            bar.update()
    bar.close()
