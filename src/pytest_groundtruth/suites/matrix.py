"""The test matrix: every (suite, model, runtime, quantization, prompt) case configured.

Pure data from :class:`~pytest_groundtruth.config.settings.Settings` and the suites'
declarations; runtimes are constructed (cheap) to read their quantizations and
capabilities, no engine is loaded, so ``pytest --collect-only`` shows the matrix at once.
A case the runtime cannot run is still listed, with the reason it will skip, so the
report shows the holes in the matrix.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from pytest_groundtruth.config.settings import ConfigError, Settings, known_runtimes
from pytest_groundtruth.runtimes.base import Capability
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.spec import Cell, get_suite, suite_names


def configured_suites(settings: Settings) -> tuple[str, ...]:
    """The suites ``settings`` runs, in its order; by default every registered one, by rank."""
    return settings.suites if settings.suites is not None else suite_names()


def cells(settings: Settings, model: str) -> list[Cell]:
    """The model on each configured runtime."""
    out = []
    for name in settings.runtimes:
        runtime = make_runtime(name, settings)
        quants = tuple(q for q in settings.quantizations if q in runtime.quantizations)
        out.append(Cell(model, name, quants, runtime.capabilities))
    return out


def check_quantizations(settings: Settings) -> None:
    """A configured quantization that no known runtime offers is an error (a typo would
    otherwise test nothing, silently)."""
    offered = {}
    for name in sorted(known_runtimes(settings)):
        try:
            offered[name] = make_runtime(name, settings).quantizations
        except ConfigError:
            if name in settings.runtimes or name in settings.runtime_options:
                raise
            # a registered kind that exists only configured (command, openai): no offer
    offered = {n: q for n, q in offered.items() if q}
    for quant in settings.quantizations:
        if not any(quant in q for q in offered.values()):
            raise ConfigError(
                f"{', '.join(settings.sources) or 'configuration'}: key 'quantizations' has "
                f"{quant!r}, which no runtime offers ("
                + "; ".join(f"{n}: {', '.join(q)}" for n, q in offered.items()) + ")"
            )


def unoffered(settings: Settings) -> list[str]:
    """A sentence for each configured quantization that none of the run's runtimes offers
    (another known runtime does, or :func:`check_quantizations` would have refused it):
    its tests are not in the matrix, which a user should hear about."""
    offers = {name: make_runtime(name, settings).quantizations for name in settings.runtimes}
    return [f"quantization {quant!r} is offered by none of the runtimes of this run ("
            + "; ".join(f"{n}: {', '.join(q) or 'none'}" for n, q in offers.items())
            + "): no test runs it"
            for quant in settings.quantizations
            if not any(quant in q for q in offers.values())]


def check_artifacts(settings: Settings, cases: Sequence[Case]) -> None:
    """A supplied artifact (``[[artifacts]]``, ``--gt-artifact``) that no test will use is an
    error naming it: otherwise the run tests the plugin's own conversion and goes green."""
    used = {(c.model, c.runtime, q) for c in cases if c.skip is None
            for q in (c.quant, c.other) if q is not None}
    for art in settings.artifacts:
        if (art.model, art.runtime, art.quantization) in used:
            continue
        offered = make_runtime(art.runtime, settings).quantizations
        if art.model not in settings.models:
            why = f"model {art.model!r} is not in models ({', '.join(settings.models)})"
        elif art.runtime not in settings.runtimes:
            why = f"runtime {art.runtime!r} is not in runtimes ({', '.join(settings.runtimes)})"
        elif art.quantization not in offered:
            why = (f"runtime {art.runtime!r} has no quantization {art.quantization!r} "
                   f"(it offers {', '.join(offered)})")
        elif art.quantization not in settings.quantizations:
            why = (f"quantization {art.quantization!r} is not in quantizations "
                   f"({', '.join(settings.quantizations)})")
        else:
            why = (f"no configured suite ({', '.join(configured_suites(settings))}) runs on "
                   "it here")
        raise ConfigError(
            f"artifact {art.path} ({art.model}:{art.runtime}:{art.quantization}) would not be "
            f"tested: {why}; fix [[tool.groundtruth.artifacts]] or --gt-artifact, or add it "
            "to the matrix"
        )


def build_cases(settings: Settings, prompts: Sequence[str], chat: Collection[str] = ()
                ) -> list[Case]:
    """Every case of the configured matrix: per model, runtime by runtime, quantization by
    quantization (pair cases after a runtime's single ones), suites in configured order.
    A case of a ``chat`` prompt on a runtime without :attr:`Capability.CHAT` skips; a suite
    declared with ``chat=False`` gets the plain prompts only."""
    suites = [get_suite(name) for name in configured_suites(settings)]
    order = {name: i for i, name in enumerate(configured_suites(settings))}
    runtimes = {name: i for i, name in enumerate(settings.runtimes)}
    quants = {name: i for i, name in enumerate(settings.quantizations)}
    prompt_order = {name: i for i, name in enumerate(prompts)}
    check_quantizations(settings)
    cases: list[Case] = []
    for model in settings.models:
        model_cells = cells(settings, model)
        lacking = {c.runtime for c in model_cells if Capability.CHAT not in c.capabilities}
        found = [case for suite in suites
                 for case in suite.cases(model, model_cells, prompts if suite.chat else
                                         [p for p in prompts if p not in chat], settings)]
        found = [replace(c, skip=f"runtime {c.runtime!r} has no {Capability.CHAT.value} "
                         f"(prompt {c.prompt!r} is a conversation)")
                 if c.prompt in chat and c.runtime in lacking and c.skip is None else c
                 for c in found]
        found.sort(key=lambda c: (c.device != "cpu", runtimes.get(c.runtime, len(runtimes)),
                                  c.other is not None, quants.get(c.quant, len(quants)),
                                  order[c.suite],
                                  prompt_order.get(c.prompt or "", -1)))
        cases.extend(found)
    check_artifacts(settings, cases)
    return cases
