"""perf: performance assertions, only where a threshold is configured (never by default).

``min_throughput`` (tokens/s) and ``max_p99_ms`` (99th-percentile per-token latency, ms),
per runtime in ``[tool.groundtruth]`` or with ``--gt-min-throughput`` /
``--gt-max-p99-ms``, each make one test per model x runtime x quantization of that runtime,
failing with the measured figure. Nothing here runs, and nothing enters the qualification
score, unless a threshold is set: timings depend on the machine, and the parity verdicts
must not.

The figures are measured now, not read from the result cache (a cached generation's
timings belong to the run that made it): the runner is opened, one warm-up generation of
the first prompt is discarded, then every prompt is generated once. Throughput is all
generated tokens over all generation seconds; per-token latencies are the runner's
``step_seconds`` (each token after the first), pooled over the prompts, p99 nearest-rank
(:mod:`pytest_groundtruth.measures.timing`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_groundtruth.config.qualification import threshold_for
from pytest_groundtruth.config.settings import Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import RuntimeUnavailable
from pytest_groundtruth.measures.timing import speed
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.result import SuiteResult
from pytest_groundtruth.suites.spec import Cell, Suite, each_artifact


def thresholds(settings: Settings, runtime: str) -> tuple[float | None, float | None]:
    """(min tokens/s, max p99 ms) configured for ``runtime``."""
    return (threshold_for(settings.min_throughput, runtime),
            threshold_for(settings.max_p99_ms, runtime))


def run(case: Case, ctx: Context) -> SuiteResult:
    min_tok_s, max_p99 = thresholds(ctx.settings, case.runtime)
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant, case.device)
    runner = ctx.engines.runner(artifact, case.device)
    prompts = ctx.inputs.prompts
    n = ctx.settings.max_new_tokens
    runner.generate(next(iter(prompts.values())).text, n)  # warm-up, not counted
    gens = [runner.generate(p.text, n) for p in prompts.values()]
    measured = speed([(len(g.tokens), g.seconds, g.first_token_seconds, g.step_seconds)
                      for g in gens])
    if max_p99 is not None and measured.p99_ms is None:
        raise RuntimeUnavailable(
            f"runtime {case.runtime!r} records no per-token timings, so max_p99_ms = {max_p99} "
            "cannot be checked for it; set the latency threshold for the other runtimes only "
            "(max_p99_ms = {RUNTIME = MS})")
    checks = []
    passed = True
    if min_tok_s is not None:
        ok = measured.tokens_per_second >= min_tok_s
        passed &= ok
        checks.append(f"{measured.tokens_per_second:.1f} tokens/s "
                      f"{'>=' if ok else '<'} {min_tok_s:g}")
    if max_p99 is not None and measured.p99_ms is not None:
        ok = measured.p99_ms <= max_p99
        passed &= ok
        checks.append(f"p99 per-token latency {measured.p99_ms:.1f} ms "
                      f"{'<=' if ok else '>'} {max_p99:g}")
    ttft = ("" if measured.first_token_ms is None
            else f"; time to first token {measured.first_token_ms:.1f} ms (mean)")
    return SuiteResult(
        case=case,
        passed=passed,
        summary="; ".join(checks) + f" ({measured.tokens} tokens over {len(gens)} prompts"
        f"{ttft})",
        measured=measured.to_json(),
        bound={"min_tokens_per_second": min_tok_s, "max_p99_ms": max_p99},
        bound_origin="min_throughput / max_p99_ms (configuration or --gt-* options)",
        artifact=str(artifact.path),
        recipe=artifact.recipe,
        calls=tuple(dict.fromkeys(g.call for g in gens)),
        notes=("measured now (one warm-up generation discarded), never from the cache",),
        details={"speed": measured.to_json(),
                 "per_prompt": {name: speed([(len(g.tokens), g.seconds, g.first_token_seconds,
                                              g.step_seconds)]).to_json()
                                for name, g in zip(prompts, gens, strict=True)}},
    )


def _cases(suite: Suite, model: str, cells: Sequence[Cell], prompts: Sequence[str],
           settings: Settings) -> list[Case]:
    """A case per artifact of each runtime that has a threshold; none by default."""
    chosen = [c for c in cells if any(t is not None for t in thresholds(settings, c.runtime))]
    return each_artifact(suite, model, chosen, prompts, settings)


SUITE = Suite(
    "perf",
    "throughput and p99 per-token latency against configured floors (only when configured)",
    run,
    per_prompt=False,
    expand=_cases,
    weight=None,  # timings are not part of the score
    rank=95,
)
