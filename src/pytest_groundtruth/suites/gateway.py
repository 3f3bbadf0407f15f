"""gateway: G1 loads, G2 generates, G3 no crash and no timeout, G4 not garbage.

The model QA playbooks' gateways, one test per model x runtime x quantization, checked
in order; the first that fails decides, and the later ones are not checked. A failed
gateway zeroes the combination's qualification score (docs/qualification.md).

* **G1 loads**: the artifact is built (or the user's file found) and the engine opens it.
  Made once per artifact and kept in the result store, like every engine result, so an
  unchanged re-run loads nothing.
* **G2 generates**: the engine returns a greedy generation for the first prompt.
* **G3 no crash, no timeout**: every other prompt's generation returns too; an engine that
  dies, refuses its command line or runs past ``timeout`` fails here.
* **G4 not garbage**: no generation is garbage by :mod:`pytest_groundtruth.measures.garbage`
  (empty, NaN/Inf log-probabilities, U+FFFD or control characters the oracle's text lacks,
  a short n-gram repeated through most of the output, a flood of one special token). An
  engine that reports non-finite logits or unparseable output answers, but with garbage:
  that is G4 too.

A gate that fails because the engine crashed or hung carries that fault, so the test's
outcome is Crashed or Timeout; garbage is Falsified. Each generation's speed (tokens/s,
time to first token, per-token latency) is reported in the details, never judged here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import (
    CacheUnusable,
    EngineFailure,
    FailureKind,
    RuntimeUnavailable,
)
from pytest_groundtruth.core.tables import text_table
from pytest_groundtruth.measures.garbage import Finding, detect
from pytest_groundtruth.measures.timing import speed
from pytest_groundtruth.models.sources import ModelUnavailable
from pytest_groundtruth.oracle.format import OracleError
from pytest_groundtruth.runtimes.base import Artifact, Generation
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult
from pytest_groundtruth.suites.spec import Suite, Work

GATES = (("G1", "loads"), ("G2", "generates"), ("G3", "no crash, no timeout"),
         ("G4", "not garbage"))
# Engine failures that are an answer (a wrong one), judged by G4; the others stop the engine.
ANSWERS = (FailureKind.NAN, FailureKind.GARBAGE)
# Outcomes the playbook tells apart; any other exception in a gate counts as a crash.
FAULTS = {FailureKind.TIMEOUT: "timeout"}


@dataclass(frozen=True)
class Gate:
    gate: str
    check: str
    status: str  # "passed" | "failed" | "not checked"
    detail: str = ""


def fault_of(exc: BaseException) -> str:
    """The outcome an exception in a gate stands for: ``timeout`` or ``crashed``."""
    if isinstance(exc, EngineFailure):
        return FAULTS.get(exc.kind, "crashed")
    return "crashed"


def describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load(ctx: Context, artifact: Artifact, device: str) -> dict[str, Any]:
    start = time.perf_counter()
    ctx.engines.runner(artifact, device)  # stays open in the pool for the generations
    return {"seconds": time.perf_counter() - start}


def _seconds(data: dict[str, Any]) -> float:
    """A stored load result (raises on one that no longer decodes: it is made again)."""
    return float(data["seconds"])


def _reference(ctx: Context, case: Case, prompt: str) -> str | None:
    try:
        return ctx.inputs.oracle(case.model, prompt).text
    except OracleError:
        return None  # no oracle: the character rules then hold any U+FFFD or control char


def _special_ids(ctx: Context, case: Case) -> tuple[frozenset[int], str]:
    try:
        return ctx.inputs.special_ids(case.model), ""
    except (OSError, ValueError, RuntimeError) as exc:  # no tokenizer.json to read
        return frozenset(), f"special tokens unknown ({describe(exc)}): no flood check"


def garbage_of(gen: Generation, reference: str | None,
               special_ids: frozenset[int]) -> tuple[Finding, ...]:
    logprobs = [step.logprobs for step in gen.topk] if gen.topk is not None else None
    return detect(gen.tokens, gen.text, logprobs=logprobs, special_ids=special_ids,
                  reference=reference, stopped_at_eos=gen.stop_reason == "eos").findings


def run(case: Case, ctx: Context) -> SuiteResult:
    gates: list[Gate] = []
    details: dict[str, Any] = {"performance": {}, "garbage": {}}
    notes: list[str] = []
    calls: list[str] = []
    artifact: Artifact | None = None

    def attempt(make: Callable[[], Any]) -> Any:
        try:
            return make()
        except (ModelUnavailable, RuntimeUnavailable):
            raise  # the test skips with the reason
        except CacheUnusable:
            raise  # a full or read-only cache: not the engine's failure, no gate fails
        except Exception as exc:  # any failure of the engine is this gate's verdict
            return exc

    def done(fault: str = "") -> SuiteResult:
        return _result(case, gates, details, notes, calls, artifact, fault)

    # G1: the artifact loads.
    found = attempt(lambda: ctx.engines.artifact(case.model, case.runtime, case.quant,
                                                 case.device))
    if isinstance(found, Exception):
        supplied = ctx.settings.supplied_artifact(case.model, case.runtime, case.quant)
        doing = (f"loading your file {supplied}" if supplied is not None
                 else "building the artifact")
        gates.append(Gate("G1", "loads", "failed", f"{doing}: {describe(found)}"))
        return done(fault_of(found))
    artifact = found
    loaded = attempt(lambda: ctx.results.cached(
        "load", found, case.device, lambda: _load(ctx, found, case.device), _seconds))
    if isinstance(loaded, Exception):
        gates.append(Gate("G1", "loads", "failed", f"opening {found.path}: {describe(loaded)}"))
        return done(fault_of(loaded))
    gates.append(Gate("G1", "loads", "passed", f"{found.path.name} opened in {loaded:.2f} s"))

    # G2, G3: every prompt's generation returns (the first one is G2).
    prompts = ctx.prompts_for(case.runtime, case.device)
    outputs: dict[str, Generation | EngineFailure] = {}
    for i, name in enumerate(prompts):
        gen = attempt(partial(ctx.results.generation, found, name, case.device))
        if isinstance(gen, EngineFailure) and gen.kind in ANSWERS:
            outputs[name] = gen  # an answer, a garbage one: G4 judges it
            continue
        if isinstance(gen, Exception):
            gate = "G2" if i == 0 else "G3"
            if gate == "G3":
                gates.append(Gate("G2", "generates", "passed", f"prompt {prompts[0]!r}"))
            gates.append(Gate(gate, dict(GATES)[gate], "failed",
                              f"prompt {name!r}: {describe(gen)}"))
            if isinstance(gen, EngineFailure) and gen.call:
                calls.append(gen.call)
            return done(fault_of(gen))
        outputs[name] = gen
        calls.append(gen.call)
        details["performance"][name] = speed(
            [(len(gen.tokens), gen.seconds, gen.first_token_seconds, gen.step_seconds)]
        ).to_json()
    gates.append(Gate("G2", "generates", "passed", f"prompt {prompts[0]!r}"))
    gates.append(Gate("G3", "no crash, no timeout", "passed",
                      f"{len(prompts)} prompt(s) generated"))

    # G4: nothing returned is garbage.
    special, note = _special_ids(ctx, case)
    if note:
        notes.append(note)
    bad: list[tuple[str, Finding]] = []
    for name, out in outputs.items():
        if isinstance(out, EngineFailure):
            rule = "non-finite" if out.kind is FailureKind.NAN else "unparseable"
            findings: tuple[Finding, ...] = (Finding(rule, 0, "step", str(out.args[0])),)
        else:
            findings = garbage_of(out, _reference(ctx, case, name), special)
        details["garbage"][name] = [asdict(f) for f in findings]
        bad.extend((name, f) for f in findings)
    if not bad:
        gates.append(Gate("G4", "not garbage", "passed", f"{len(outputs)} generation(s) checked"))
        return done()
    first = f"{bad[0][0]}: {bad[0][1]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    gates.append(Gate("G4", "not garbage", "failed", first))
    notes.append("garbage found (prompt, rule, where, why):")
    notes.extend(f"  {name}: {f}" for name, f in bad)
    return done()


def _result(case: Case, gates: list[Gate], details: dict[str, Any], notes: list[str],
            calls: list[str], artifact: Artifact | None, fault: str) -> SuiteResult:
    checked = {g.gate for g in gates}
    shown = [*gates, *(Gate(g, name, "not checked") for g, name in GATES if g not in checked)]
    failed = next((g for g in gates if g.status == "failed"), None)
    passed = failed is None
    summary = ("G1-G4 passed: loads, generates, no crash or timeout, no garbage"
               if failed is None else f"{failed.gate} ({failed.check}) failed: {failed.detail}")
    details["gates"] = [asdict(g) for g in shown]
    return SuiteResult(
        case=case,
        passed=passed,
        summary=summary,
        measured=sum(g.status == "passed" for g in gates),
        bound="G1-G4 pass",
        artifact=str(artifact.path) if artifact else "",
        recipe=artifact.recipe if artifact else "",
        calls=tuple(dict.fromkeys(calls)),
        notes=tuple(notes),
        details=details,
        table=tuple(text_table(("gate", "check", "status", "detail"),
                               [(g.gate, g.check, g.status, g.detail) for g in shown])),
        fault="" if passed else fault,
    )


SUITE = Suite(
    "gateway",
    "G1 loads, G2 generates, G3 no crash or timeout, G4 output not garbage (zero score if not)",
    run,
    per_prompt=False,
    weight=None,  # a gate, not a weight: a failed gateway zeroes the score
    work=frozenset({Work.GENERATE}),
    rank=5,
)
