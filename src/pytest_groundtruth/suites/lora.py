"""lora: a LoRA adapter gives the same model unmerged, merged, and hot-applied by llama.cpp.

For each configured model, every roster model that merges an adapter into it
(``lora:BASE`` with the built-in deterministic adapter, e.g. ``smollm2-135m-lora``;
``[tool.groundtruth.adapters.NAME]`` for a user's own) is checked three ways; the test
ids carry the merged model's name:

* ``merge`` (per prompt, transformers): peft's unmerged model (base + adapter) and the
  ``merge_and_unload()`` model give identical greedy tokens, and their teacher-forced
  logits over prompt + generated tokens satisfy PEFT's ``allclose`` rule
  (``|a - b| <= atol + rtol * |b|``, both 1e-4 as in PEFT's own tests).
* ``changes`` (per adapter): the adapter changes the model, or the ``merge`` check proves
  nothing: the merged model's greedy tokens differ from the base's oracle on at least
  ``min_changed_prompts`` prompts, and on every prompt its teacher-forced logits move by
  at least ``min_logit_change`` (100 times the merge tolerance) from the base's.
* ``hot`` (per prompt, llama.cpp at float32): the base model's F32 GGUF with the adapter
  as a GGUF LoRA applied at load time (``Llama(lora_path=...)``) gives the same greedy
  tokens as the merged model's F32 GGUF; the largest teacher-forced log-probability
  difference is reported.

The merged model itself is a roster model like any other: add it to ``models`` and the
usual suites run on it at every quantization, against its own oracle
(``groundtruth oracle --model smollm2-135m-lora``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.plugins import package_version
from pytest_groundtruth.ggufio.lora import WRITER_VERSION, adapter_problem, export_lora_gguf
from pytest_groundtruth.measures.closeness import closeness
from pytest_groundtruth.measures.near_ties import compare
from pytest_groundtruth.models.sources import LoraParts, base_of, lora_parts
from pytest_groundtruth.runtimes.base import Capability, Generation
from pytest_groundtruth.runtimes.hf import TransformersRunner
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner
from pytest_groundtruth.runtimes.lora import UnmergedRunner, hot_runner, logits
from pytest_groundtruth.store.artifacts import Recipe
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult, bound_of, token_table
from pytest_groundtruth.suites.spec import Cell, Suite

PRECISION = "float32"


def adapters_of(model: str, settings: Settings) -> list[str]:
    """The roster models that merge an adapter into ``model``."""
    return [slug for slug, spec in settings.roster.items()
            if spec.scheme == "lora" and spec.location.split(":", 1)[0] == model]


# Its checks (the cases' ``variant``): unmerged vs merged per prompt, the adapter changes
# the output, llama.cpp's hot-applied adapter vs the merged model per prompt.
MERGE, CHANGES, HOT = "merge", "changes", "hot"


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    transformers = [c.runtime for c in cells if Capability.LORA_UNMERGED in c.capabilities]
    llamacpp = [c.runtime for c in cells if Capability.LORA_HOT in c.capabilities]
    cases = []
    for merged in adapters_of(model, settings):
        for runtime in transformers[:1]:
            cases += [Case(suite.name, merged, runtime, PRECISION, p, variant=MERGE)
                      for p in prompts]
            cases.append(Case(suite.name, merged, runtime, PRECISION, variant=CHANGES))
        cases += [Case(suite.name, merged, runtime, PRECISION, p, variant=HOT)
                  for runtime in llamacpp[:1] for p in prompts]
    return cases


def with_parts(check: Callable[[Case, Context, LoraParts], SuiteResult]
               ) -> Callable[[Case, Context], SuiteResult]:
    """``check`` given the base and merged models (built once, cached) and the adapter."""

    def run(case: Case, ctx: Context) -> SuiteResult:
        spec = ctx.settings.spec(case.model)
        ctx.engines.model(base_of(spec, ctx.settings.roster).slug)
        ctx.engines.model(case.model)  # the merged model (built once, cached)
        return check(case, ctx, lora_parts(spec, ctx.engines.cache_dir, ctx.settings.root,
                                           ctx.settings.roster))

    return run


def _transformers(ctx: Context, slug: str, runtime: str) -> TransformersRunner:
    runner = ctx.engines.runner(ctx.engines.artifact(slug, runtime, PRECISION))
    assert isinstance(runner, TransformersRunner)
    return runner


# --------------------------------------------------------------------------- merge


def _merge(case: Case, ctx: Context, parts: LoraParts) -> SuiteResult:
    assert case.prompt is not None
    merged_art = ctx.engines.artifact(case.model, case.runtime, PRECISION)
    base_art = ctx.engines.artifact(parts.base.slug, case.runtime, PRECISION)
    merged = ctx.results.generation(merged_art, case.prompt)
    prompt = ctx.inputs.prompts[case.prompt].text
    n = ctx.settings.max_new_tokens
    atol, rtol = bound_of(ctx, case, "atol"), bound_of(ctx, case, "rtol")

    def make() -> dict[str, Any]:
        unmerged = ctx.engines.pool.get(f"lora-unmerged:{merged_art.key}",
                                        lambda: UnmergedRunner(base_art, parts.adapter))
        assert isinstance(unmerged, UnmergedRunner)
        generation = unmerged.generate(prompt, n)
        ids = [*merged.prompt_tokens, *merged.tokens]
        # Before the merged model opens: a pool of one runner closes the unmerged one.
        unmerged_logits = logits(unmerged, ids)
        merged_runner = _transformers(ctx, case.model, case.runtime)
        near = closeness(unmerged_logits, logits(merged_runner, ids), atol.value, rtol.value)
        return {"generation": generation.to_json(), "max_abs": near.max_abs,
                "position": near.position, "worst_ratio": near.worst_ratio,
                "positions": len(ids), "prompt_len": len(merged.prompt_tokens)}

    # The unmerged side runs peft's LoRA layers: a new peft may compute them otherwise,
    # so its version is in the key (the merged model's key no longer names it: that
    # model is identified by its weights).
    data = ctx.results.cached("lora-unmerged", merged_art,
                              [prompt, n, parts.fingerprint, atol.value, rtol.value,
                               package_version("peft")], make, _with_generation)
    unmerged = Generation.from_json(data["generation"])
    cmp = compare(merged.tokens, unmerged.tokens)
    bound = bound_of(ctx, case, "max_mismatches")
    tokens_ok = cmp.counted <= bound.value
    logits_ok = data["worst_ratio"] <= 1.0
    where = data["position"] - data["prompt_len"]
    at = f"generated position {where}" if where >= 0 else f"prompt position {data['position']}"
    summary = (
        (f"unmerged and merged: tokens identical ({len(merged.tokens)})" if cmp.counted == 0
         else f"unmerged vs merged: {cmp.counted} tokens differ, first divergence at "
              f"position {cmp.first}")
        + f"; teacher-forced logits max |diff| {data['max_abs']:.2e} at {at} over "
        f"{data['positions']} positions ({'within' if logits_ok else 'outside'} "
        f"atol {atol.value:g} + rtol {rtol.value:g} * |merged|: worst "
        f"{data['worst_ratio']:.3f} of the tolerance)")
    return SuiteResult(
        case=case,
        passed=tokens_ok and logits_ok,
        summary=summary,
        measured={"mismatches": cmp.counted, "max_abs_logit_diff": data["max_abs"],
                  "worst_ratio": data["worst_ratio"]},
        bound={"max_mismatches": bound.value, "atol": atol.value, "rtol": rtol.value},
        bound_origin=f"max_mismatches: {bound.origin}; atol: {atol.origin}; "
                     f"rtol: {rtol.origin}",
        first_divergence=cmp.first,
        rows=() if cmp.first is None else token_table(
            ctx, case, merged.tokens, unmerged.tokens, cmp.positions),
        artifact=f"{merged_art.path} (merged); {base_art.path} + {parts.adapter} (unmerged)",
        recipe=merged_art.recipe,
        calls=(unmerged.call, merged.call),
        details={"tokens": list(unmerged.tokens), "merged_tokens": list(merged.tokens),
                 "max_abs_logit_diff": data["max_abs"], "worst_ratio": data["worst_ratio"],
                 "adapter": str(parts.adapter)},
    )


# --------------------------------------------------------------------------- changes


def _changes(case: Case, ctx: Context, parts: LoraParts) -> SuiteResult:
    merged_art = ctx.engines.artifact(case.model, case.runtime, PRECISION)
    base_art = ctx.engines.artifact(parts.base.slug, case.runtime, PRECISION)
    min_logit = bound_of(ctx, case, "min_logit_change")
    min_prompts = bound_of(ctx, case, "min_changed_prompts")
    rows = []
    for name in ctx.inputs.prompts:
        oracle = ctx.inputs.oracle(parts.base.slug, name)
        merged = ctx.results.generation(merged_art, name)
        ids = [*merged.prompt_tokens, *merged.tokens]

        def make(ids: list[int] = ids) -> dict[str, Any]:
            a = logits(_transformers(ctx, case.model, case.runtime), ids)
            b = logits(_transformers(ctx, parts.base.slug, case.runtime), ids)
            return {"max_abs": float(np.abs(a.astype(np.float64) - b).max())}

        change = ctx.results.cached("lora-change", merged_art, [base_art.key, ids], make,
                                    _with_number("max_abs"))
        cmp = compare(oracle.tokens, merged.tokens)
        rows.append((name, cmp.counted, cmp.first, change["max_abs"], len(merged.tokens)))
    changed = [r for r in rows if r[1] > 0]
    flat = [r for r in rows if r[3] < min_logit.value]
    passed = len(changed) >= min_prompts.value and not flat
    table = [f"{name}: {count}/{max(length, 1)} tokens differ from the base's oracle"
             + (f" (first at {first})" if first is not None else "")
             + f"; teacher-forced logits move by up to {delta:.3g}"
             for name, count, first, delta, length in rows]
    summary = (f"the adapter changes the greedy tokens on {len(changed)}/{len(rows)} prompts "
               f"({'>=' if len(changed) >= min_prompts.value else '<'} {min_prompts.value})"
               f"; the smallest per-prompt logit change is {min(r[3] for r in rows):.3g} "
               f"({'>=' if not flat else '<'} {min_logit.value})")
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured={"changed_prompts": len(changed),
                  "min_logit_change": min(r[3] for r in rows)},
        bound={"min_changed_prompts": min_prompts.value, "min_logit_change": min_logit.value},
        bound_origin=f"min_changed_prompts: {min_prompts.origin}; "
                     f"min_logit_change: {min_logit.origin}",
        artifact=f"{merged_art.path} vs {base_art.path}",
        recipe=merged_art.recipe,
        notes=tuple(f"{name}: logits move by only {delta:.3g}: the merge check cannot tell "
                    "a merged adapter from none here" for name, _, _, delta, _ in flat),
        table=tuple(table),
        details={"per_prompt": {name: {"mismatches": count, "first_divergence": first,
                                       "max_abs_logit_change": delta}
                                for name, count, first, delta, _ in rows},
                 "adapter": str(parts.adapter)},
    )


# --------------------------------------------------------------------------- hot


def _adapter_gguf(ctx: Context, case: Case, parts: LoraParts) -> Path:
    def build(out: Path) -> str:
        export_lora_gguf(parts.adapter, parts.base.path, out)
        return (f"pytest_groundtruth.ggufio.lora.export_lora_gguf({str(parts.adapter)!r}, "
                f"{str(parts.base.path)!r}, <out>)  # writer v{WRITER_VERSION}")

    recipe = Recipe(case.model, "llamacpp-lora-adapter",
                    {"adapter": parts.fingerprint, "base": parts.base.fingerprint,
                     "writer": WRITER_VERSION}, ".gguf", build, adapter_problem)
    return ctx.engines.artifacts.get(recipe).path


def _hot(case: Case, ctx: Context, parts: LoraParts) -> SuiteResult:
    assert case.prompt is not None
    runtime = ctx.engines.runtime(case.runtime)
    base_gguf = ctx.engines.artifact(parts.base.slug, case.runtime, PRECISION)
    merged_gguf = ctx.engines.artifact(case.model, case.runtime, PRECISION)
    adapter = _adapter_gguf(ctx, case, parts)
    merged = ctx.results.generation(merged_gguf, case.prompt)
    prompt = ctx.inputs.prompts[case.prompt].text
    n = ctx.settings.max_new_tokens

    def make() -> dict[str, Any]:
        hot = ctx.engines.pool.get(f"lora-hot:{base_gguf.key}:{parts.fingerprint}",
                                   lambda: hot_runner(runtime, base_gguf, adapter))
        assert isinstance(hot, LlamaCppRunner)
        generation = hot.generate(prompt, n)
        ids = [*merged.prompt_tokens, *merged.tokens]
        hot_lp = hot.sequence_logprobs(ids)
        merged_runner = ctx.engines.runner(merged_gguf)
        assert isinstance(merged_runner, LlamaCppRunner)
        merged_lp = merged_runner.sequence_logprobs(ids)
        return {"generation": generation.to_json(),
                "max_abs_logprob": float(np.abs(hot_lp - merged_lp).max())}

    data = ctx.results.cached("lora-hot", base_gguf,
                              [prompt, n, parts.fingerprint, WRITER_VERSION,
                               merged_gguf.key], make, _with_generation)
    hot = Generation.from_json(data["generation"])
    cmp = compare(merged.tokens, hot.tokens)
    bound = bound_of(ctx, case, "max_mismatches")
    passed = cmp.counted <= bound.value
    said = (f"hot-applied adapter and merged model: tokens identical ({len(merged.tokens)})"
            if cmp.counted == 0 else
            f"hot-applied vs merged: {cmp.counted} tokens differ "
            f"({'<=' if passed else '>'} {bound.value}), first divergence at {cmp.first}")
    return SuiteResult(
        case=case,
        passed=passed,
        summary=f"{said}; teacher-forced log-probabilities differ by up to "
                f"{data['max_abs_logprob']:.2e}",
        measured={"mismatches": cmp.counted, "max_abs_logprob_diff": data["max_abs_logprob"]},
        bound=bound.value,
        bound_origin=bound.origin,
        first_divergence=cmp.first,
        rows=() if cmp.first is None else token_table(
            ctx, case, merged.tokens, hot.tokens, cmp.positions),
        artifact=f"{base_gguf.path} + {adapter} (hot) vs {merged_gguf.path} (merged)",
        recipe=merged_gguf.recipe,
        calls=(hot.call, merged.call),
        details={"tokens": list(hot.tokens), "merged_tokens": list(merged.tokens),
                 "max_abs_logprob_diff": data["max_abs_logprob"]},
    )


def _with_generation(data: dict[str, Any]) -> dict[str, Any]:
    """A stored measurement holding a generation (raises when it does not decode)."""
    Generation.from_json(data["generation"])
    return data


def _with_number(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(data: dict[str, Any]) -> dict[str, Any]:
        float(data[key])
        return data

    return check


SUITE = Suite(
    "lora",
    "a LoRA adapter: unmerged vs merged (tokens, logits), it changes the output, "
    "llama.cpp hot-applied vs merged",
    with_parts(_merge),
    checks={MERGE: with_parts(_merge), CHANGES: with_parts(_changes), HOT: with_parts(_hot)},
    per_prompt=True,
    # plain prompts: the unmerged and hot-applied paths generate from prompt text
    chat=False,
    params={
        "max_mismatches": 0,  # merge and hot-apply are exact up to float rounding
        "atol": 1e-4,  # PEFT's merge tests: torch.allclose(atol=1e-4, rtol=1e-4)
        "rtol": 1e-4,
        "min_logit_change": 1e-2,  # 100 x atol: the adapter must be visible to the merge check
        "min_changed_prompts": 1,
    },
    expand=_cases,
    falsify=False,  # judges the merged model, not the artifact under test
    rank=95,
)
