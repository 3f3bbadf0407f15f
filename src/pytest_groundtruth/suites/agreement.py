"""agreement: teacher-forced top-1 agreement and KL divergence against the oracle.

The runtime scores each prompt followed by the oracle's tokens; positions from every
prompt are pooled per artifact (one test per model x runtime x quantization), so the
statistic rests on ~100 positions rather than one sequence's first flip. Bounds are per
quantization (docs/suites.md says how they were calibrated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.hashing import text_sha256
from pytest_groundtruth.measures.agreement import PositionAgreement, agreement
from pytest_groundtruth.runtimes.base import Capability
from pytest_groundtruth.suites import calibrated
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult, token_table
from pytest_groundtruth.suites.spec import Suite

BOUNDS_FILE = Path(__file__).parents[1] / "data" / "agreement_bounds.json"


def load_bounds(path: Path = BOUNDS_FILE) -> dict[str, dict[str, float]]:
    """The calibrated agreement bounds (written by `groundtruth calibrate`)."""
    bounds: dict[str, dict[str, float]] = json.loads(path.read_text())["bounds"]
    return bounds


BOUNDS = load_bounds()
# tiny random-weight models have bounds of their own (docs/calibration.md)
RANDOM_BOUNDS: dict[str, dict[str, float]] = calibrated.read(BOUNDS_FILE).get("random_bounds", {})


def _score(case: Case, ctx: Context) -> tuple[dict[str, list[PositionAgreement]], str]:
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant)
    oracles = {name: ctx.inputs.oracle(case.model, name) for name in ctx.inputs.prompts}
    runner = ctx.engines.runner(artifact)
    per_prompt = {}
    for name, oracle in oracles.items():
        ids = list(oracle.prompt_tokens) + list(oracle.tokens)
        rows = runner.score(ids, len(oracle.prompt_tokens))
        per_prompt[name] = agreement(oracle.steps, oracle.tokens, np.asarray(rows))
    return per_prompt, f"{artifact.recipe} -> score(prompt + oracle tokens)"


@dataclass(frozen=True)
class Agreement:
    positions: dict[str, list[PositionAgreement]]  # per prompt
    call: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Agreement:
        positions = {n: [PositionAgreement(bool(t), kl, a) for t, kl, a in ps]
                     for n, ps in data["positions"].items()}
        return cls(positions, data["call"])

    @property
    def pooled(self) -> list[PositionAgreement]:
        return [p for ps in self.positions.values() for p in ps]

    @property
    def top1(self) -> float:
        return sum(p.top1 for p in self.pooled) / len(self.pooled)

    @property
    def kl(self) -> float:
        return sum(p.kl for p in self.pooled) / len(self.pooled)


def measure(case: Case, ctx: Context) -> Agreement:
    """Teacher-forced agreement of the case's artifact, cached by artifact and by what the
    measurement reads from the oracles (prompt ids, tokens, top-k): regenerating an oracle
    file with the same content in another layout or schema does not invalidate it."""
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant)
    read = {n: [list(o.prompt_tokens), list(o.tokens),
                [[list(s.ids), list(s.logprobs)] for s in o.steps]]
            for n in ctx.inputs.prompts for o in [ctx.inputs.oracle(case.model, n)]}
    oracles = json.dumps(read, sort_keys=True)

    def make() -> dict[str, Any]:
        per_prompt, call = _score(case, ctx)
        return {"call": call,
                "positions": {n: [[int(p.top1), p.kl, p.runtime_argmax] for p in ps]
                              for n, ps in per_prompt.items()}}

    return ctx.results.cached("agreement", artifact, text_sha256(oracles), make,
                              Agreement.from_json)


def run(case: Case, ctx: Context) -> SuiteResult:
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant)
    measured = measure(case, ctx)
    positions, pooled = measured.positions, measured.pooled
    top1, kl = measured.top1, measured.kl
    min_top1 = calibrated.bound(ctx, case, "min_top1", RANDOM_BOUNDS)
    max_kl = calibrated.bound(ctx, case, "max_kl", RANDOM_BOUNDS)
    passed = top1 >= min_top1.value and kl <= max_kl.value
    summary = (
        f"top-1 agreement {top1:.3f} ({'>=' if top1 >= min_top1.value else '<'} "
        f"{min_top1.value}), mean KL {kl:.4f} ({'<=' if kl <= max_kl.value else '>'} "
        f"{max_kl.value}) over {len(pooled)} teacher-forced positions"
    )
    worst_name, worst = max(
        ((n, i) for n, ps in positions.items() for i in range(len(ps))),
        key=lambda ni: positions[ni[0]][ni[1]].kl,
    )
    oracle = ctx.inputs.oracle(case.model, worst_name)
    runtime_tokens = list(oracle.tokens)
    runtime_tokens[worst] = positions[worst_name][worst].runtime_argmax
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured={"top1": top1, "kl": kl},
        bound={"min_top1": min_top1.value, "max_kl": max_kl.value},
        bound_origin=f"min_top1: {min_top1.origin}; max_kl: {max_kl.origin}",
        rows=token_table(ctx, case, oracle.tokens, runtime_tokens, [worst], oracle),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(measured.call,),
        notes=(f"largest KL {positions[worst_name][worst].kl:.4f} at {worst_name} position "
               f"{worst} (table: the runtime's argmax there under teacher forcing)",),
        details={"top1": top1, "mean_kl": kl, "positions": len(pooled),
                 "per_prompt": {n: {"top1": sum(p.top1 for p in ps) / len(ps),
                                    "mean_kl": sum(p.kl for p in ps) / len(ps)}
                                for n, ps in positions.items()}},
    )


SUITE = Suite(
    "agreement",
    "teacher-forced top-1 agreement and KL divergence against the oracle's top-k",
    run,
    needs=((Capability.SCORE,),),
    per_prompt=False,
    # `groundtruth calibrate` derives these (docs/calibration.md).
    params={
        "min_top1": {q: b["min_top1"] for q, b in BOUNDS.items()},
        "max_kl": {q: b["max_kl"] for q, b in BOUNDS.items()},
    },
    rank=80,
    worse={"top1": "lower", "kl": "higher"},
)
