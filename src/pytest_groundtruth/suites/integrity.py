"""integrity: the artifact itself against the source model: metadata, tokenizer, every tensor.

Generated tokens say *that* a conversion misbehaves; at int4 the honest quantization
drift of a small model is as large as many real conversion bugs, so this suite reads
the artifact instead and names the broken field or tensor (docs/integrity.md):

* metadata: architecture, shape, context, RoPE, norm epsilon, tied embeddings, special
  ids and BOS/EOS addition, against config.json and the reference tokenizer;
* tokenizer: the engine's own tokenizer against the reference on the prompts and a
  battery of awkward strings (ids exactly, and decoding back);
* tensors: every tensor against its source tensor, within what its declared type is
  expected to cost that very tensor, with no whole-tensor scale or bias.

One test per model x runtime x quantization. Measurements are cached per artifact;
the verdict is computed on every run, so a ``slack`` override applies at once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import EngineFailure
from pytest_groundtruth.integrity import report as words
from pytest_groundtruth.integrity.check import (
    ENGINE_FAILED,
    EngineTokenizer,
    Measurement,
    check_apr,
    check_directory,
    check_gguf,
    evaluate,
)
from pytest_groundtruth.integrity.findings import to_jsonable
from pytest_groundtruth.integrity.torch_weights import cast_reference, torchao_reference
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.apr import AprRuntime
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.torchao_rt import make_config
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.quality import Weight, q_integrity
from pytest_groundtruth.suites.result import SuiteResult, bound_of
from pytest_groundtruth.suites.spec import Box, Suite, Work

INTEGRITY_VERSION = "2"  # bump when a measurement changes meaning (invalidates the cache)
RULE = ("metadata and tokenizer exact; each tensor: error <= k_T*e_ref + u_T, |scale - "
        "ref| and |bias - ref| within the scheme's rounding (docs/integrity.md)")


def engine_tokenizer(ctx: Context, artifact: Artifact) -> EngineTokenizer | str:
    """The loaded engine's tokenize/decode, or why the engine offers none (an engine that
    cannot load the file fails the tokenizer section; the other sections still run)."""
    try:
        runner: Any = ctx.engines.runner(artifact)
    except EngineFailure as exc:
        return f"{ENGINE_FAILED}: {exc}"
    call = getattr(runner, "load_call", type(runner).__name__)
    try:
        runner.tokenize("probe")
    except NotImplementedError as exc:
        return str(exc)
    decode = getattr(runner, "decode", None)
    if decode is None and getattr(runner, "tokenizer", None) is not None:
        tok = runner.tokenizer

        def decode(ids: Any) -> str:
            return str(tok.decode(list(ids), skip_special_tokens=True))

    return EngineTokenizer(runner.tokenize, decode, f"{call}: tokenize() / decode()")


def measure(case: Case, ctx: Context, artifact: Artifact, model: ResolvedModel
            ) -> Measurement:
    prompts = [p.text for p in ctx.inputs.prompts.values()]
    if artifact.path.suffix == ".gguf":
        return check_gguf(artifact.path, model.path, prompts, engine_tokenizer(ctx, artifact))
    if case.runtime == "apr":

        runtime = ctx.engines.runtime("apr")
        assert isinstance(runtime, AprRuntime)
        info = runtime.inspect(artifact.path)
        return check_apr(info, model.path, f"{runtime.apr_bin} inspect {artifact.path} --json")
    if case.runtime in ("transformers", "torchao"):
        import torch


        runner: Any = ctx.engines.runner(artifact)
        if case.runtime == "torchao":

            reference = torchao_reference(lambda: make_config(case.quant), torch.float32)
        else:
            reference = cast_reference(getattr(torch, case.quant))
        return check_directory(artifact.path, model.path, prompts, runner.model, reference,
                               runner.load_call)
    raise ValueError(f"integrity: no reader for runtime {case.runtime!r} artifact "
                     f"{artifact.path}")


def run(case: Case, ctx: Context) -> SuiteResult:
    model = ctx.engines.model(case.model)
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant)
    slack = bound_of(ctx, case, "slack")
    prompts = hashlib.sha256(json.dumps([p.text for p in ctx.inputs.prompts.values()]).encode())
    # The path is part of the key: the recorded calls name the file that was read.
    key = [INTEGRITY_VERSION, model.fingerprint, prompts.hexdigest(), str(artifact.path)]
    measurement = ctx.results.cached(
        "integrity", artifact, key, lambda: measure(case, ctx, artifact, model).to_json(),
        Measurement.from_json)
    report = evaluate(measurement, float(slack.value))
    found = words.problems(report)
    return SuiteResult(
        case=case,
        passed=report.passed,
        summary=words.summary(report),
        measured=len(found),
        bound=f"{RULE}; slack x{slack.value}",
        bound_origin=slack.origin,
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=report.calls,
        table=words.notes(report),
        details={
            "problems": found,
            "sections": {s.name: {"status": s.status, "checked": s.checked,
                                  "reason": s.reason, "notes": list(s.notes)}
                         for s in report.sections},
            "metadata": to_jsonable(report.metadata.findings),
            "tokenizer": to_jsonable(report.tokenizer.failures),
            "tensor_findings": to_jsonable(report.tensors.failures),
            **report.details,
        },
    )


SUITE = Suite(
    "integrity",
    "the artifact itself against the source: metadata, tokenizer, every tensor",
    run,
    needs=(),
    per_prompt=False,
    # Tensor bounds are derived from each tensor's declared type (docs/integrity.md);
    # slack multiplies them (e.g. 1.5 for an importance-matrix quantization).
    params={"slack": 1.0},
    weight=Weight(15, q_integrity, "white-box: the file's metadata, tokenizer and "
                  "tensors; separates broken from honest int4 files where black-box "
                  "bounds cannot"),
    work=frozenset({Work.INTEGRITY}),
    box=Box.WHITE,
    rank=90,
)
