"""speculative: greedy speculative decoding gives exactly the target's own greedy tokens.

Speculative decoding is lossless for greedy decoding: whatever the draft proposes, the
target keeps only the tokens it would have chosen itself. Real engines have broken this
(cache-position and dtype bugs in assisted generation, draft/target mismatches in
serving engines), so each prompt is one test:

* ``transformers``, one case per draft (``[tool.groundtruth.speculative] drafts``; by
  default the ``<model>-draft`` roster entry, a layer-truncated copy of the target, and
  the target itself, which must accept every draft): ``generate(assistant_model=draft)``
  at float32 must give the committed oracle's tokens. A draft with another vocabulary
  is an error naming both tokenizers.
* ``llamacpp`` (variant ``lookup``), per configured quantization: llama-cpp-python's
  prompt-lookup draft with the greedy sampler must give the engine's own non-speculative
  greedy tokens at that quantization.

Each result reports the acceptance rate (accepted / drafted tokens) and the mean
acceptance length (1 + accepted / drafting steps), counted as serving engines count
them (:mod:`pytest_groundtruth.measures.acceptance`). ``min_acceptance`` (off by
default; set it with a ``[[tool.groundtruth.bounds]]`` rule) fails a test whose rate
is lower, with the figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.measures.logprobs import TopK
from pytest_groundtruth.measures.near_ties import MARGIN, compare
from pytest_groundtruth.models.drafts import vocabulary_mismatch
from pytest_groundtruth.models.sources import ModelError
from pytest_groundtruth.oracle.format import Oracle
from pytest_groundtruth.runtimes.base import Capability, Runner
from pytest_groundtruth.runtimes.hf import TransformersRunner
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner
from pytest_groundtruth.runtimes.speculative import (
    SpeculativeGeneration,
    assisted_generate,
    prompt_lookup_generate,
)
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult, bound_of, token_table
from pytest_groundtruth.suites.spec import Cell, Suite

PRECISION = "float32"  # assisted generation is checked against the float32 oracle
LOOKUP = "lookup"
SELF = "self"


def draft_of(case: Case) -> str:
    """The roster slug of a transformers case's draft."""
    return case.model if case.variant == SELF else case.variant


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    cases = []
    for cell in cells:
        if Capability.ASSISTED in cell.capabilities:
            for draft in settings.speculative.drafts_for(model, settings.roster):
                variant = SELF if draft == model else draft
                cases += [Case(suite.name, model, cell.runtime, PRECISION, p, variant=variant)
                          for p in prompts]
        elif Capability.PROMPT_LOOKUP in cell.capabilities:
            cases += [Case(suite.name, model, cell.runtime, quant, p, variant=LOOKUP)
                      for quant in cell.quantizations for p in prompts]
    return cases


def _assisted(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None
    draft_slug = draft_of(case)
    target_model, draft_model = ctx.engines.model(case.model), ctx.engines.model(draft_slug)
    problem = vocabulary_mismatch(target_model.path, draft_model.path)
    if problem:
        raise ModelError(f"draft {draft_slug!r} cannot assist {case.model!r}: {problem}")
    oracle = ctx.inputs.oracle(case.model, case.prompt)
    target = ctx.engines.artifact(case.model, case.runtime, case.quant)
    draft = ctx.engines.artifact(draft_slug, case.runtime, case.quant)
    spec = ctx.settings.speculative
    n = ctx.settings.max_new_tokens

    def make() -> dict[str, Any]:
        target_runner = ctx.engines.runner(target)
        if draft.key == target.key:
            return assisted(target_runner, target_runner)
        if ctx.engines.pool.size >= 2:  # both stay open
            return assisted(target_runner, ctx.engines.runner(draft))
        with ctx.engines.runtime(case.runtime).open(draft, draft_model) as draft_runner:
            return assisted(target_runner, draft_runner)

    def assisted(target_runner: Runner, draft_runner: Runner) -> dict[str, Any]:
        if not (isinstance(target_runner, TransformersRunner)
                and isinstance(draft_runner, TransformersRunner)):
            raise TypeError(f"runtime {case.runtime!r} did not open transformers runners: "
                            "assisted generation needs transformers models")
        return assisted_generate(target_runner, draft_runner, oracle.prompt, n,
                                 spec.draft_tokens).to_json()

    result = ctx.results.cached("speculative", target, [oracle.prompt, n, draft.key,
                                                        spec.draft_tokens], make,
                                SpeculativeGeneration.from_json)
    return verdict(ctx, case, Reference(oracle.tokens, oracle.steps, "the oracle",
                                        f"oracle/{case.model}/{case.prompt}.json"),
                   result, f"{target.path} (draft: {draft.path})", oracle)


def _lookup(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None
    own, artifact = ctx.results.generate(case.model, case.runtime, case.quant, case.prompt)
    spec = ctx.settings.speculative
    prompt = ctx.inputs.prompts[case.prompt].text
    n = ctx.settings.max_new_tokens

    def make() -> dict[str, Any]:
        runner = ctx.engines.runner(artifact)
        if not isinstance(runner, LlamaCppRunner):
            raise TypeError(f"runtime {case.runtime!r} opened {type(runner).__name__}, not "
                            "a llama.cpp runner: prompt lookup needs llama-cpp-python")
        return prompt_lookup_generate(runner, prompt, n, spec.lookup_tokens,
                                      spec.lookup_ngram).to_json()

    result = ctx.results.cached("speculative-lookup", artifact,
                                [prompt, n, spec.lookup_tokens, spec.lookup_ngram], make,
                                SpeculativeGeneration.from_json)
    return verdict(ctx, case, Reference(own.tokens, own.topk, "the engine's own greedy tokens",
                                        own.call,
                                        own.seconds),
                   result, str(artifact.path))


@dataclass(frozen=True)
class Reference:
    """The tokens a speculative generation must reproduce, with their top-k per step."""

    tokens: Sequence[int]
    steps: Sequence[TopK] | None  # the reference's own top-k log-probabilities, if known
    name: str
    call: str
    seconds: float | None = None  # how long the reference generation took, when known


def tie_note(reference: Reference, tokens: Sequence[int], position: int) -> str | None:
    """What the reference's top-k says at the first divergence, when it has one there."""
    if reference.steps is None or position >= len(reference.steps) or position >= len(tokens):
        return None
    step = reference.steps[position]
    if len(step.ids) < 2:
        return None
    chosen = tokens[position]
    rank = (f"its #{step.ids.index(chosen) + 1} ({step.logprobs[step.ids.index(chosen)]:.4f})"
            if chosen in step.ids else f"outside its top-{len(step.ids)}")
    return (f"at position {position} {reference.name} had top-1 {step.ids[0]} "
            f"({step.logprobs[0]:.4f}), top-2 {step.ids[1]} ({step.logprobs[1]:.4f}), margin "
            f"{step.margin:.4f} (near-tie margin {MARGIN}); the speculative path "
            f"chose {chosen}, {rank}")


def verdict(ctx: Context, case: Case, reference: Reference, result: SpeculativeGeneration,
            artifact: str, oracle: Oracle | None = None) -> SuiteResult:
    """The tokens must equal the reference's (a first flip at a near tie is decided by the
    near-tie rule, as in the count suites); the acceptance rate must reach
    ``min_acceptance`` when one is set."""
    tokens = result.generation.tokens
    cmp = compare(reference.tokens, tokens, ctx.settings.near_ties, reference.steps,
                  result.generation.topk, reference.name)
    max_mismatches = bound_of(ctx, case, "max_mismatches")
    minimum = bound_of(ctx, case, "min_acceptance")
    stats = result.acceptance
    tokens_ok = cmp.counted <= max_mismatches.value
    low = minimum.value is not None and stats.rate is not None and stats.rate < minimum.value
    if cmp.first is None:
        said = f"tokens identical to {reference.name} ({len(tokens)} tokens)"
    else:
        said = (f"{cmp.counted}/{max(len(reference.tokens), len(tokens))} tokens differ from "
                f"{reference.name} ({'<=' if tokens_ok else '>'} {max_mismatches.value}), "
                f"first divergence at position {cmp.first}")
    rate = stats.describe()
    if minimum.value is not None:
        rate += (f" ({'<' if low else '>='} minimum {minimum.value})" if stats.rate is not None
                 else f" (minimum {minimum.value} not checked)")
    notes = [f"method: {result.method}"]
    tie = None if cmp.first is None else tie_note(reference, tokens, cmp.first)
    notes += [n for n in (tie, cmp.note) if n]
    if minimum.value is not None and stats.rate is None:
        notes.append("nothing was drafted, so the acceptance rate is undefined and the "
                     "minimum was not checked")
    bound: dict[str, Any] = {"max_mismatches": max_mismatches.value}
    origin = f"max_mismatches: {max_mismatches.origin}"
    if minimum.value is not None:
        bound["min_acceptance"] = minimum.value
        origin += f"; min_acceptance: {minimum.origin}"
    return SuiteResult(
        case=case,
        passed=tokens_ok and not low,
        summary=f"{said}; {rate}",
        measured=cmp.counted,
        bound=bound,
        bound_origin=origin,
        first_divergence=cmp.first,
        rows=() if cmp.first is None else token_table(
            ctx, case, reference.tokens, tokens, cmp.positions, oracle),
        artifact=artifact,
        calls=(result.generation.call, reference.call),
        notes=tuple(notes),
        details={"tokens": list(tokens), "reference_tokens": list(reference.tokens),
                 "acceptance_rate": stats.rate, "mean_acceptance_length": stats.mean_length,
                 "drafted": stats.drafted, "accepted": stats.accepted,
                 "drafting_steps": stats.steps, "seconds": result.generation.seconds,
                 "reference_seconds": reference.seconds, "method": result.method},
    )


SUITE = Suite(
    "speculative",
    "greedy speculative decoding (a draft model; llama.cpp prompt lookup) gives the "
    "target's own greedy tokens; reports acceptance",
    _assisted,  # the variant names the draft (its slug, or "self")
    checks={LOOKUP: _lookup},
    per_prompt=True,
    # plain prompts: drafting and prompt lookup run on prompt text, not conversations
    chat=False,
    params={
        "max_mismatches": 0,  # lossless: exactly the target's tokens
        "min_acceptance": None,  # off by default: set one with a [[bounds]] rule
    },
    expand=_cases,
    falsify=False,  # judges the draft with the target
    rank=90,
)
