"""agreement: teacher-forced top-1 agreement and KL divergence against the oracle.

The runtime scores each prompt followed by the oracle's tokens; positions from every
prompt are pooled per artifact (one test per model x runtime x quantization), so the
statistic rests on ~100 positions rather than one sequence's first flip.

Variant ``text``: the runtime scores the evaluation text (the ppl suite's,
``prompts/eval/perplexity.txt``) as the float32 reference tokenized it, and each position
is compared with the reference's top-k there (computed once by the reference model,
through the result store). The text is longer than any prompt and its continuation, so
faults that grow with distance (a wrong RoPE base or scaling, attention over the wrong
span) weigh more there, and its ~240 positions make the mean KL's standard error small
enough to bound tightly at lossy quantizations (docs/calibration.md).

Bounds are per quantization (and per runtime where one name covers several schemes),
calibrated by ``groundtruth calibrate`` (the package defaults) or on the model's own
reference conversions (:mod:`pytest_groundtruth.framework.auto`). The text case's bounds
are ``text_min_top1`` and ``text_max_kl``, the names its failures print and a
``[[bounds]]`` rule sets.
"""

from __future__ import annotations

import json
import math
import statistics as statistics_
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import InputError
from pytest_groundtruth.core.hashing import text_sha256
from pytest_groundtruth.framework import rules
from pytest_groundtruth.framework.bounds import Calibration
from pytest_groundtruth.measures.agreement import PositionAgreement, agreement
from pytest_groundtruth.measures.logprobs import TopK, top_k
from pytest_groundtruth.oracle.format import REFERENCE
from pytest_groundtruth.runtimes.base import Artifact, Capability
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.quality import Weight, q_agreement
from pytest_groundtruth.suites.result import SuiteResult, bound_of, token_table
from pytest_groundtruth.suites.spec import Cell, Suite, Work, each_artifact

PARAMS = ("min_top1", "max_kl", "text_min_top1", "text_max_kl")  # calibrated
BOUNDS_FILE = "agreement_bounds.json"  # the package defaults (pytest_groundtruth/data)


def _score(ctx: Context, artifact: Artifact) -> tuple[dict[str, list[PositionAgreement]], str]:
    oracles = {name: ctx.inputs.oracle(artifact.model, name)
               for name in ctx.inputs.answerable(artifact.model)}
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


TEXT = "text"  # the variant scored on the evaluation text
TEXT_TOP_K = 20  # reference top-k kept per position of the evaluation text


@dataclass(frozen=True)
class ReferenceText:
    """The float32 reference's view of the evaluation text: its token ids and, at each
    position after the first, its top-k next tokens."""

    name: str  # the text file's name
    ids: tuple[int, ...]
    steps: tuple[TopK, ...]
    call: str


def reference_text(ctx: Context, model: str) -> ReferenceText:
    """The reference's top-k over the evaluation text (made once, by the reference model)."""
    reference = ctx.engines.artifact(model, *REFERENCE)
    path, text = ctx.inputs.eval_text

    def make() -> dict[str, Any]:
        runner = ctx.engines.runner(reference, alone=True)
        ids = list(runner.tokenize(text))
        if len(ids) < 2:
            raise InputError(f"{path}: the evaluation text is {len(ids)} token(s) long; "
                             "teacher forcing needs at least 2")
        rows = np.asarray(runner.score(ids, 1), dtype=np.float64)
        steps = [top_k(row, TEXT_TOP_K) for row in rows]
        return {"ids": ids, "steps": [[list(s.ids), list(s.logprobs)] for s in steps],
                "call": f"{reference.recipe} -> score(<{len(ids)} ids of {path.name}>)"}

    def decode(data: dict[str, Any]) -> ReferenceText:
        return ReferenceText(path.name, tuple(int(i) for i in data["ids"]),
                             tuple(TopK(tuple(int(i) for i in ids), tuple(float(v) for v in lps))
                                   for ids, lps in data["steps"]), str(data["call"]))

    return ctx.results.cached("reference-text", reference, [text_sha256(text), TEXT_TOP_K],
                              make, decode)


def measure_text(case: Case, ctx: Context) -> Agreement:
    """Teacher-forced agreement of the case's artifact with the reference on the
    evaluation text (cached by artifact and the reference's view of the text)."""
    return text_of(ctx, ctx.engines.artifact(case.model, case.runtime, case.quant))


def text_of(ctx: Context, artifact: Artifact) -> Agreement:
    """:func:`measure_text` of any artifact of the model."""
    ref = reference_text(ctx, artifact.model)

    def make() -> dict[str, Any]:
        rows = np.asarray(ctx.engines.runner(artifact).score(list(ref.ids), 1))
        tokens = [s.ids[0] for s in ref.steps]  # the reference's own choice
        positions = agreement(ref.steps, tokens, rows)
        return {"call": f"{artifact.recipe} -> score(<{len(ref.ids)} ids of {ref.name}>)",
                "positions": {ref.name: [[int(p.top1), p.kl, p.runtime_argmax]
                                         for p in positions]}}

    key = text_sha256(json.dumps([list(ref.ids), [[list(s.ids), list(s.logprobs)]
                                                  for s in ref.steps]]))
    return ctx.results.cached("agreement-text", artifact, key, make, Agreement.from_json)


def measure(case: Case, ctx: Context) -> Agreement:
    """Teacher-forced agreement of the case's artifact, cached by artifact and by what the
    measurement reads from the oracles (prompt ids, tokens, top-k): regenerating an oracle
    file with the same content in another layout or schema does not invalidate it."""
    return measure_of(ctx, ctx.engines.artifact(case.model, case.runtime, case.quant))


def measure_of(ctx: Context, artifact: Artifact) -> Agreement:
    """:func:`measure` of any artifact of the model."""
    read = {n: [list(o.prompt_tokens), list(o.tokens),
                [[list(s.ids), list(s.logprobs)] for s in o.steps]]
            for n in ctx.inputs.answerable(artifact.model)
            for o in [ctx.inputs.oracle(artifact.model, n)]}
    oracles = json.dumps(read, sort_keys=True)

    def make() -> dict[str, Any]:
        per_prompt, call = _score(ctx, artifact)
        return {"call": call,
                "positions": {n: [[int(p.top1), p.kl, p.runtime_argmax] for p in ps]
                              for n, ps in per_prompt.items()}}

    return ctx.results.cached("agreement", artifact, text_sha256(oracles), make,
                              Agreement.from_json)


def _text(case: Case, ctx: Context) -> SuiteResult:
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant)
    measured = measure_text(case, ctx)
    ref = reference_text(ctx, case.model)
    min_top1 = bound_of(ctx, case, "text_min_top1")
    max_kl = bound_of(ctx, case, "text_max_kl")
    verdict = _verdict(measured, min_top1.value, max_kl.value, "text_")
    positions = measured.pooled
    worst = max(range(len(positions)), key=lambda i: positions[i].kl)
    reference = [s.ids[0] for s in ref.steps]
    runtime = list(reference)
    runtime[worst] = positions[worst].runtime_argmax
    return SuiteResult(
        case=case,
        passed=verdict[0],
        summary=f"{ref.name}: {verdict[1]}",
        measured={"top1": measured.top1, "kl": measured.kl},
        bound={"text_min_top1": min_top1.value, "text_max_kl": max_kl.value},
        bound_origin=f"text_min_top1: {min_top1.origin}; text_max_kl: {max_kl.origin}",
        rows=token_table(ctx, case, reference, runtime, [worst]),
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=(ref.call, measured.call),
        notes=(f"largest KL {positions[worst].kl:.4f} at position {worst + 1} of {ref.name} "
               "(table: 'oracle' is the reference's top-1 there, 'runtime' the runtime's "
               "argmax)",),
        details={"top1": measured.top1, "mean_kl": measured.kl, "positions": len(positions),
                 "text": ref.name},
    )


def _verdict(measured: Agreement, min_top1: Any, max_kl: Any, prefix: str = ""
             ) -> tuple[bool, str]:
    top1, kl = measured.top1, measured.kl
    if min_top1 is None or max_kl is None:
        return False, ("no calibrated bound for this quantization: run `groundtruth "
                       "calibrate --model <model>` or set one under "
                       "[tool.groundtruth.bounds]")
    passed = top1 >= min_top1 and kl <= max_kl
    return passed, (
        f"top-1 agreement {top1:.3f} ({'>=' if top1 >= min_top1 else '<'} "
        f"{prefix}min_top1 {min_top1}), mean KL {kl:.4g} ({'<=' if kl <= max_kl else '>'} "
        f"{prefix}max_kl {max_kl}) over {len(measured.pooled)} teacher-forced positions")


def run(case: Case, ctx: Context) -> SuiteResult:
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant)
    measured = measure(case, ctx)
    positions, pooled = measured.positions, measured.pooled
    top1, kl = measured.top1, measured.kl
    min_top1 = bound_of(ctx, case, "min_top1")
    max_kl = bound_of(ctx, case, "max_kl")
    passed, summary = _verdict(measured, min_top1.value, max_kl.value)
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


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    """A case per artifact on the oracles' prompts, and one (``text``) on the evaluation
    text."""
    base = each_artifact(suite, model, cells, prompts, settings)
    return base + [replace(c, variant=TEXT) for c in base]


def statistics(ctx: Context, artifact: Artifact) -> dict[str, Any]:
    """What the calibration reads of one correct conversion: top-1 and mean KL with the
    KL's standard error, on the prompts and on the evaluation text."""

    def summary(measured: Agreement) -> dict[str, Any]:
        kls = [p.kl for p in measured.pooled]
        se = statistics_.stdev(kls) / math.sqrt(len(kls)) if len(kls) > 1 else 0.0
        return {"top1": measured.top1, "kl": measured.kl, "kl_se": se,
                "positions": len(kls)}

    return {**summary(measure_of(ctx, artifact)), "text": summary(text_of(ctx, artifact))}


def derive(stats: Sequence[Mapping[str, Any]], quant: str) -> dict[str, float]:
    """:func:`~pytest_groundtruth.framework.rules.derive` on conversions' statistics."""
    def row(s: Mapping[str, Any], text: rules.Measured | None = None) -> rules.Measured:
        return rules.Measured("", "", quant, s["top1"], s["kl"], s["positions"], None,
                              s["kl_se"], text)

    found = rules.derive([row(s, row(s["text"])) for s in stats], quant)
    return {k: v for k, v in found.items() if k != "max_ratio"}


CALIBRATION = Calibration(BOUNDS_FILE, PARAMS, statistics, derive,
                          rule="KL: worst correct + 3 standard errors (or llama.cpp's "
                          "published figure); top-1: worst correct - 3 binomial standard "
                          "errors")


SUITE = Suite(
    "agreement",
    "teacher-forced top-1 agreement and KL divergence against the oracle's top-k",
    run,
    checks={TEXT: _text},
    needs=((Capability.SCORE,),),
    per_prompt=False,
    # calibrated (docs/calibration.md): package defaults, or the model's own
    params=dict.fromkeys(PARAMS),
    calibration=CALIBRATION,
    expand=_cases,
    weight=Weight(30, q_agreement, "teacher-forced over every prompt's positions, so "
                  "one early near-tie flip cannot cascade; bounds calibrated on correct "
                  "conversions: the strongest black-box measure"),
    work=frozenset({Work.SCORE}),
    rank=80,
    worse={"top1": "lower", "kl": "higher"},
)
