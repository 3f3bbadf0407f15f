"""The floor of a parity run: the engine work it cannot avoid, each piece measured alone.

A run of the parity matrix must, at the least: resolve each model to its float32
directory; convert each artifact once (llama.cpp: our GGUF export; torchao: quantize at
load); load it once; generate once per artifact x prompt; score once per artifact
(perplexity of the evaluation text, teacher-forced scoring for ``agreement``); measure
its integrity once; export and reimport it once for ``roundtrip`` and generate with the
reimport; and regenerate each committed oracle once (the drift check). Which of these a
suite needs is its declaration's :attr:`~pytest_groundtruth.suites.spec.Suite.work`.
Suites whose work is none of these (speculative decoding with a draft, LoRA merges: no
``work`` declared) are timed whole: their runnable cases run one after another through
the suite's own ``run`` after the pieces above, in the same cache (so the artifacts
already exist, and every result is made: the generations they share with ``token`` are
counted twice, a few seconds that raise the floor). :func:`work_of` reads which of these
the configured cases need; :func:`measure_floor` does each piece directly on the engines
(no result store, no pytest), one after another in one process, in an empty cache, and
times it. The sum is the floor a cold run is compared with (``groundtruth bench``).
Each piece's peak resident memory is read too (the process's peak is reset before it:
:func:`~pytest_groundtruth.core.budget.reset_peak`), for the memory budget's table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.budget import peak_bytes, reset_peak
from pytest_groundtruth.core.failures import EngineFailure, RuntimeUnavailable
from pytest_groundtruth.ggufio.reader import gguf_problem
from pytest_groundtruth.models.sources import ModelUnavailable
from pytest_groundtruth.oracle.diff import CROSS_MACHINE_TOLERANCE
from pytest_groundtruth.oracle.generation import oracle_check
from pytest_groundtruth.runtimes.base import Capability, respond
from pytest_groundtruth.store.artifacts import exported, reimported
from pytest_groundtruth.suites import integrity
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.spec import Work as Kind
from pytest_groundtruth.suites.spec import get_suite

T = TypeVar("T")


@dataclass(frozen=True)
class Work:
    """The engine work the cases need from one artifact."""

    model: str
    runtime: str
    quant: str
    kinds: frozenset[Kind]


def work_of(cases: Sequence[Case]) -> tuple[list[Work], tuple[str, ...]]:
    """Per artifact (in case order), the work the runnable CPU cases need; and the suites
    that declare no work of their own (:attr:`Suite.work`: their cases are timed whole)."""
    needs: dict[tuple[str, str, str], set[Kind]] = {}
    unknown: set[str] = set()
    for case in cases:
        if case.skip or case.device != "cpu":
            continue
        kinds = get_suite(case.suite).work
        if kinds is None:
            unknown.add(case.suite)
            continue
        needs.setdefault((case.model, case.runtime, case.quant), set()).update(kinds)
        if case.other:  # a pair case: the other artifact's side of the comparison
            needs.setdefault((case.model, case.runtime, case.other), set()).update(
                kinds - {Kind.ROUNDTRIP})
    work = [Work(m, r, q, frozenset(k)) for (m, r, q), k in needs.items()]
    return work, tuple(sorted(unknown))


@dataclass(frozen=True)
class ArtifactFloor:
    model: str
    runtime: str
    quant: str
    convert_s: float = 0.0  # the artifact's build (+ torchao's quantization at load)
    load_s: float = 0.0
    generate_s: float = 0.0
    tokens: int = 0
    score_s: float = 0.0  # perplexity and teacher-forced scoring
    integrity_s: float = 0.0
    roundtrip_s: float = 0.0  # export, reimport, load the reimport, generate with it
    skipped: str = ""  # why it was not measured (the run skips it too)
    peaks: tuple[tuple[str, int], ...] = ()  # (phase, peak resident bytes during it)

    @property
    def total(self) -> float:
        return (self.convert_s + self.load_s + self.generate_s + self.score_s
                + self.integrity_s + self.roundtrip_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.generate_s if self.generate_s else 0.0


@dataclass(frozen=True)
class Floor:
    sources: tuple[tuple[str, float], ...]  # model -> seconds to resolve it
    artifacts: tuple[ArtifactFloor, ...]
    oracle_checks: tuple[tuple[str, float], ...]  # model -> seconds to regenerate its oracles
    unknown_suites: tuple[str, ...] = field(default=())
    # suite -> (seconds of its cases run whole, cases run, cases that could not run)
    suites: tuple[tuple[str, float, int, int], ...] = field(default=())
    # (what: "<suite> (suite's own run)" or "<model> oracle check", peak resident bytes)
    peaks: tuple[tuple[str, int], ...] = field(default=())

    @property
    def total(self) -> float:
        return (sum(s for _, s in self.sources) + sum(a.total for a in self.artifacts)
                + sum(s for _, s in self.oracle_checks) + sum(s for _, s, _, _ in self.suites))


def timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


class Peaks:
    """The peak resident memory of each phase: :meth:`start` resets the process's peak,
    :meth:`end` records it under the phase's name (0 where peaks cannot be reset)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int]] = []
        self._resettable = False

    def start(self) -> None:
        self._resettable = reset_peak()

    def end(self, phase: str) -> None:
        if self._resettable:
            self.found.append((phase, peak_bytes()))


def measure_artifact(ctx: Context, work: Work) -> ArtifactFloor:
    """Do ``work`` on the engines directly, timing each part."""
    try:
        runtime = ctx.engines.runtime(work.runtime)
        model = ctx.engines.model(work.model)
    except (RuntimeUnavailable, ModelUnavailable) as exc:
        return ArtifactFloor(work.model, work.runtime, work.quant, skipped=str(exc))
    settings = ctx.settings
    top_k = settings.top_k if Capability.TOPK in runtime.capabilities else 0
    prompts = list(ctx.inputs.prompts.values())
    peaks = Peaks()
    peaks.start()
    artifact, convert = timed(lambda: ctx.engines.artifact(work.model, work.runtime, work.quant))
    peaks.end("convert")
    peaks.start()
    runner, load = timed(lambda: ctx.engines.runner(artifact))
    peaks.end("load")
    quantize = float(getattr(runner, "quantize_seconds", 0.0))  # torchao converts at load
    generate = score = check = roundtrip = 0.0
    tokens = 0
    if Kind.GENERATE in work.kinds:
        peaks.start()
        for prompt in prompts:
            gen, seconds = timed(partial(respond, runner, prompt, settings.max_new_tokens,
                                         top_k))
            generate += seconds
            tokens += len(gen.tokens)
        peaks.end("generate")
    if work.kinds & {Kind.PERPLEXITY, Kind.SCORE}:
        peaks.start()
    if Kind.PERPLEXITY in work.kinds:
        _, seconds = timed(lambda: runner.perplexity(ctx.inputs.eval_text[1]))
        score += seconds
    if Kind.SCORE in work.kinds:
        for prompt in prompts:
            oracle = ctx.inputs.oracle(work.model, prompt.name)
            ids = list(oracle.prompt_tokens) + list(oracle.tokens)
            _, seconds = timed(partial(runner.score, ids, len(oracle.prompt_tokens)))
            score += seconds
    if work.kinds & {Kind.PERPLEXITY, Kind.SCORE}:
        peaks.end("score")
    if Kind.INTEGRITY in work.kinds:
        case = Case("integrity", work.model, work.runtime, work.quant)
        peaks.start()
        _, check = timed(lambda: integrity.measure(case, ctx, artifact, model))
        peaks.end("integrity")
    if Kind.ROUNDTRIP in work.kinds:
        peaks.start()
        start = time.perf_counter()
        gguf = exported(artifact, lambda: runner, gguf_problem, ctx.engines.artifacts)
        again = reimported(runtime, model, work.quant, gguf.path, ctx.engines.artifacts)
        reloaded = ctx.engines.runner(again)
        for prompt in prompts:
            respond(reloaded, prompt, settings.max_new_tokens, top_k)
        roundtrip = time.perf_counter() - start
        peaks.end("roundtrip")
    ctx.engines.pool.close()
    return ArtifactFloor(work.model, work.runtime, work.quant, convert_s=convert + quantize,
                         load_s=load - quantize, generate_s=generate, tokens=tokens,
                         score_s=score, integrity_s=check, roundtrip_s=roundtrip,
                         peaks=tuple(peaks.found))


def measure_suite(ctx: Context, suite: str, cases: Sequence[Case]) -> tuple[str, float, int, int]:
    """Run ``suite``'s runnable CPU cases one after another; their time in all, how many
    ran, and how many raised (an unavailable engine or model, a crash: the run's test
    fails or skips the same way)."""
    ran = failed = 0
    start = time.perf_counter()
    for case in cases:
        if case.suite != suite or case.skip or case.device != "cpu":
            continue
        try:
            get_suite(suite).judge(case, ctx)
            ran += 1
        except (RuntimeUnavailable, ModelUnavailable, EngineFailure):
            failed += 1
    ctx.engines.pool.close()
    return suite, time.perf_counter() - start, ran, failed


def measure_floor(settings: Settings, cases: Sequence[Case], oracle_models: Sequence[str],
                  cache_dir: Path) -> Floor:
    """The floor of running ``cases`` plus the drift check of ``oracle_models``, measured
    in ``cache_dir`` (empty, so that every conversion happens)."""
    work, unknown = work_of(cases)
    ctx = Context.open(settings, cache_dir, max_open_runners=1)
    try:
        sources = []
        for slug in dict.fromkeys([*settings.models, *oracle_models]):
            try:
                _, seconds = timed(partial(ctx.engines.model, slug))
            except ModelUnavailable:
                continue  # its tests skip; nothing to convert
            sources.append((slug, seconds))
        artifacts = tuple(measure_artifact(ctx, w) for w in work)
        peaks = Peaks()
        suites = []
        for name in unknown:
            peaks.start()
            suites.append(measure_suite(ctx, name, cases))
            peaks.end(f"{name} (its cases run whole)")
        checks = []
        for slug in oracle_models:
            try:
                model = ctx.engines.model(slug)
            except ModelUnavailable:
                continue
            peaks.start()
            _, seconds = timed(partial(oracle_check.regenerate, ctx, model,
                                       CROSS_MACHINE_TOLERANCE))
            peaks.end(f"{slug} oracle check (the float32 reference)")
            checks.append((slug, seconds))
    finally:
        ctx.close()
    return Floor(tuple(sources), artifacts, tuple(checks), suites=tuple(suites),
                 peaks=tuple(peaks.found))
