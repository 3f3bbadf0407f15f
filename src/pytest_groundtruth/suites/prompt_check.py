"""The prompt-token check every generation-based suite runs first.

A continuation is only comparable with the oracle's when the runtime consumed the same
prompt token ids (:mod:`pytest_groundtruth.measures.prompt_parity`). When it did not, the
suite's verdict is this failure, which names the first differing token, instead of a
count of continuation mismatches that would blame the wrong thing.
"""

from __future__ import annotations

from pytest_groundtruth.context import Context
from pytest_groundtruth.measures.prompt_parity import prompt_difference
from pytest_groundtruth.oracle.format import Oracle
from pytest_groundtruth.runtimes.base import Artifact, Generation
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult, token_table


def prompt_failure(ctx: Context, case: Case, oracle: Oracle, gen: Generation,
                   artifact: Artifact) -> SuiteResult | None:
    """The failed result when ``gen`` consumed other prompt ids than ``oracle``, else None
    (also None when the runtime reports no prompt ids, or the oracle records none, as a
    file in the original workflow's format: nothing to compare)."""
    if oracle.prompt_ids is None:
        return None
    diff = prompt_difference(oracle.prompt_ids, gen.prompt_tokens)
    if diff is None:
        return None
    summary = diff.describe(lambda t: ctx.inputs.decode(case.model, t))
    return SuiteResult(
        case=case,
        passed=False,
        summary=summary,
        measured=f"prompt@{diff.position}",
        bound="the oracle's prompt token ids",
        rows=token_table(ctx, case, oracle.prompt_tokens, gen.prompt_tokens, [diff.position]),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(gen.call,),
        notes=("the table compares prompt positions (the oracle's prompt ids vs the "
               "runtime's), not generated ones; the continuation was not judged",),
        details={"prompt_difference": diff.kind, "prompt_position": diff.position,
                 "prompt_tokens": list(gen.prompt_tokens),
                 "oracle_prompt_tokens": list(oracle.prompt_tokens)},
    )
