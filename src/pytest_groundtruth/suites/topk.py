"""topk: vLLM's check_logprobs_close rule against the oracle.

Walk the two greedy sequences; they must agree up to their first divergence, where
each side's token must be among the other side's top-k (default k = 5) at that
position; later positions are not compared, since the sequences are then conditioned
on different prefixes. A correct engine that flips a near tie passes; an engine whose
choice the oracle considers unlikely fails, wherever the flip happens.

The runtime's top-k comes from its own generation (runtimes with per-step
log-probabilities) or from teacher-forced scoring of its own prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_groundtruth.context import Context
from pytest_groundtruth.measures.sequences import first_divergence
from pytest_groundtruth.oracle.format import Oracle
from pytest_groundtruth.runtimes.base import Capability, Generation
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.prompt_check import prompt_failure
from pytest_groundtruth.suites.quality import Weight, q_topk
from pytest_groundtruth.suites.result import SuiteResult, bound_of, token_table
from pytest_groundtruth.suites.spec import Suite, Work


@dataclass(frozen=True)
class TopKVerdict:
    passed: bool
    position: int | None  # first divergence
    oracle_token: int | None
    runtime_token: int | None
    oracle_rank_of_runtime: int | None  # 1-based rank in the oracle's top-k, None if absent
    runtime_rank_of_oracle: int | None


def rank(ids: tuple[int, ...], token: int | None, k: int) -> int | None:
    if token is None or token not in ids[:k]:
        return None
    return ids.index(token) + 1


def check(oracle: Oracle, tokens: tuple[int, ...], runtime_topk: tuple[int, ...] | None,
          k: int) -> TopKVerdict:
    """The vLLM rule at the first divergence of ``tokens`` from the oracle's."""
    pos = first_divergence(oracle.tokens, tokens)
    if pos is None:
        return TopKVerdict(True, None, None, None, None, None)
    oracle_token = oracle.tokens[pos] if pos < len(oracle.tokens) else None
    runtime_token = tokens[pos] if pos < len(tokens) else None
    oracle_rank = rank(oracle.steps[pos].ids, runtime_token, k) if pos < len(oracle.steps) else None
    runtime_rank = rank(runtime_topk, oracle_token, k) if runtime_topk is not None else None
    passed = oracle_rank is not None and runtime_rank is not None
    return TopKVerdict(passed, pos, oracle_token, runtime_token, oracle_rank, runtime_rank)


def runtime_topk_at(ctx: Context, case: Case, gen: Generation, pos: int,
                    k: int) -> tuple[int, ...] | None:
    """The runtime's own top-k ids at ``pos``: from its generation, else by scoring."""
    if pos >= len(gen.tokens):
        return None  # the runtime stopped before: its distribution there is not known
    if gen.topk is not None and pos < len(gen.topk):
        return gen.topk[pos].ids[:k]
    runtime = ctx.engines.runtime(case.runtime)
    if Capability.SCORE not in runtime.capabilities or not gen.prompt_tokens:
        return None
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant)
    ids = list(gen.prompt_tokens) + list(gen.tokens[:pos + 1])
    return ctx.results.scored_top_k(artifact, ids, k)


def run(case: Case, ctx: Context) -> SuiteResult:
    assert case.prompt is not None
    oracle = ctx.inputs.oracle(case.model, case.prompt)
    gen, artifact = ctx.results.generate(case.model, case.runtime, case.quant, case.prompt)
    failed = prompt_failure(ctx, case, oracle, gen, artifact)
    if failed is not None:
        return failed
    k = int(bound_of(ctx, case, "k").value)
    if k > oracle.top_k:
        raise ValueError(f"topk k = {k} exceeds the oracle's stored top_k = {oracle.top_k} "
                         f"({oracle.path}); regenerate the oracle with a larger top_k")
    pos = first_divergence(oracle.tokens, gen.tokens)
    runtime_ids = runtime_topk_at(ctx, case, gen, pos, k) if pos is not None else None
    verdict = check(oracle, gen.tokens, runtime_ids, k)
    if verdict.position is None:
        summary = "identical to the oracle: no divergence"
    else:
        def show(r: int | None) -> str:
            return f"rank {r}" if r is not None else f"not in top-{k}"

        summary = (
            f"first divergence at position {verdict.position}: runtime token "
            f"{verdict.runtime_token} is {show(verdict.oracle_rank_of_runtime)} of the "
            f"oracle; oracle token {verdict.oracle_token} is "
            f"{show(verdict.runtime_rank_of_oracle)} of the runtime"
        )
    return SuiteResult(
        case=case,
        passed=verdict.passed,
        summary=summary,
        measured=verdict.oracle_rank_of_runtime if verdict.position is not None else 0,
        bound=f"both within top-{k} at the first divergence",
        first_divergence=verdict.position,
        rows=() if verdict.position is None else token_table(
            ctx, case, oracle.tokens, gen.tokens, [verdict.position], oracle),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(gen.call,),
        details={"k": k, "oracle_rank_of_runtime": verdict.oracle_rank_of_runtime,
                 "runtime_rank_of_oracle": verdict.runtime_rank_of_oracle},
    )


SUITE = Suite(
    "topk",
    "at the first divergence each side's token is in the other's top-k (vLLM's rule)",
    run,
    needs=((Capability.TOPK, Capability.SCORE),),
    params={"k": 5},
    weight=Weight(15, q_topk, "judges the first divergence by how likely the oracle found the "
                  "runtime's token: robust to near ties, per prompt"),
    work=frozenset({Work.GENERATE}),
    rank=70,
)
