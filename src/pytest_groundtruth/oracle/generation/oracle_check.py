"""The oracle drift check, made once per change of what decides it.

Regenerating a model's committed oracles (``groundtruth oracle --check --tolerance``)
takes seconds to minutes; its verdict depends only on:

* the model's content (its fingerprint), the prompts, the evaluation text and the
  committed oracle files themselves;
* the generation settings (``max_new_tokens``, ``top_k``) and the tolerance;
* the libraries that compute it (torch, transformers, tokenizers, numpy, gguf,
  safetensors: their installed versions) and this package's code that generates and
  compares oracles (:func:`~pytest_groundtruth.core.hashing.source_sha256` of
  :mod:`~pytest_groundtruth.oracle.generation.oracles`);
* the CPU's float32 kernel family (:func:`~pytest_groundtruth.core.machine.cpu_kernel_family`).

:func:`check_model` keys the verdict on all of these in the result store (kind
``oracle-check``) and regenerates only when one changed. The verdict itself is stored,
failures included, so a stored failure keeps failing until its cause changes; the files
that differed are kept with it. ``--gt-no-cache`` (the store's refresh token) checks
again. Not keyed: the torch thread count, which moves log-probabilities by about 4e-5,
inside the tolerance (docs/environment's measurement).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pytest_groundtruth.config.prompts import load_prompts
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.hashing import file_sha256, source_sha256, text_sha256
from pytest_groundtruth.core.machine import cpu_kernel_family
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.oracle.files import OracleChange
from pytest_groundtruth.oracle.generation import oracles
from pytest_groundtruth.runtimes.hf import MemoryBudget

CHECK_VERSION = 1  # bump when a stored verdict changes meaning
# Versions, not content, on purpose: these libraries compute the reference's numbers (its
# kernels, its tokenizer); the model's weights are already in the key by content. peft
# is not here: a merged model is keyed by the weights peft produced.
LIBRARIES = ("torch", "transformers", "tokenizers", "numpy", "gguf", "safetensors")
PASSING = ("unchanged", "noise")  # what `oracle --check --tolerance` accepts


@dataclass(frozen=True)
class OracleCheck:
    slug: str
    passed: bool
    changes: tuple[dict[str, str], ...]  # files that differ: path, status, detail
    checked_seconds: float  # how long the regeneration took when it ran
    made_now: bool  # False: the stored verdict of an earlier run with the same key

    def explain(self) -> str:
        when = "checked now" if self.made_now else "stored verdict, nothing it depends on changed"
        head = (f"oracles of {self.slug}: {'reproduce' if self.passed else 'DO NOT reproduce'}"
                f" ({when}; regeneration took {self.checked_seconds:.1f} s)")
        lines = [head, *(f"  {c['status']:<10} {c['path']}"
                         + (f" - {c['detail']}" if c["detail"] else "") for c in self.changes)]
        if not self.passed:
            lines.append(f"  `groundtruth oracle --check --tolerance --model {self.slug}` says "
                         "the same; regenerate with `--force` only once the change is understood")
        return "\n".join(lines)


def _files_digest(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): file_sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_inputs(ctx: Context, model: ResolvedModel, tolerance: float | None) -> dict[str, Any]:
    """Everything the verdict of regenerating ``model``'s oracles depends on."""
    settings = ctx.settings
    eval_text = settings.path(settings.eval_text)
    return {
        "version": CHECK_VERSION,
        "model": model.fingerprint,
        "oracle_files": _files_digest(settings.path(settings.oracle_dir) / model.slug),
        "prompts": [{"name": p.name, "text": p.text,
                     "messages": [asdict(m) for m in p.messages]}
                    for p in ctx.inputs.prompts.values()],
        "eval_text": text_sha256(eval_text.read_text(encoding="utf-8"))
        if eval_text.is_file() else None,
        "max_new_tokens": settings.max_new_tokens,
        "top_k": settings.top_k,
        "tolerance": tolerance,
        "libraries": {name: package_version(name) for name in LIBRARIES},
        "code": source_sha256(oracles.__name__),
        "cpu": cpu_kernel_family(),
    }


def regenerate(ctx: Context, model: ResolvedModel, tolerance: float | None) -> dict[str, Any]:
    """Regenerate ``model``'s oracles, write nothing, and say which files differ."""
    settings = ctx.settings
    prompts = load_prompts(settings.path(settings.prompts_dir),
                           list(settings.prompts) if settings.prompts else None)
    start = time.perf_counter()
    changes: list[OracleChange] = list(oracles.build_all(
        [model], prompts, settings.path(settings.oracle_dir), settings.path(settings.eval_text),
        settings.root, max_new_tokens=settings.max_new_tokens, top_k=settings.top_k,
        check=True, tolerance=tolerance, progress=False,
        budget=MemoryBudget.from_settings(settings)))
    failed = [c for c in changes if c.status not in PASSING]
    shown = [c for c in changes if c.status != "unchanged"]
    return {
        "passed": not failed,
        "changes": [{"path": str(c.path), "status": c.status, "detail": c.detail}
                    for c in shown],
        "seconds": round(time.perf_counter() - start, 3),
    }


def check_model(ctx: Context, slug: str, tolerance: float | None) -> OracleCheck:
    """The drift verdict of ``slug``'s committed oracles: stored, or made now and stored."""
    model = ctx.engines.model(slug)
    store = ctx.results.store
    made_before = store.made

    def decode(data: dict[str, Any]) -> OracleCheck:
        return OracleCheck(slug=slug, passed=bool(data["passed"]),
                           changes=tuple(data["changes"]),
                           checked_seconds=float(data["seconds"]), made_now=False)

    check = store.fetch("oracle-check", model.fingerprint, check_inputs(ctx, model, tolerance),
                        lambda: regenerate(ctx, model, tolerance), decode)
    return replace(check, made_now=store.made > made_before)
