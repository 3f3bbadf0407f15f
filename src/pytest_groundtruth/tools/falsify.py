"""``groundtruth falsify``: which suite catches which fault, and which raises false alarms.

For one model and the llama.cpp runtime, every suite (but ``cuda``) runs on:

* correct files: our conversion at each quantization, and the correct files other tools
  make (:mod:`~pytest_groundtruth.tools.other_tools`: llama.cpp's converter and
  quantizer, the published file). A failure there is a *false alarm*;
* broken files (:mod:`~pytest_groundtruth.tools.file_faults`): our conversion with one
  converter bug injected;
* broken engines (:mod:`~pytest_groundtruth.tools.engine_faults`): the correct files run
  by a llama.cpp with one run-time fault.

A suite *catches* a fault at a quantization when at least one of its tests there fails
(a verdict, an engine crash or an error). Power is reported separately for the
white-box suite (``integrity``: it reads the file itself) and the black-box ones (every
other suite: they judge what the engine does). A black-box catch counts toward a
quantization's power only from a suite that raised no false alarm on any correct file
at that quantization: a suite that also fails correct files does not tell a broken
conversion from a good one. docs/falsification.md is written by this command, never by
hand.
"""

from __future__ import annotations

import platform
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pytest_groundtruth.config.settings import ExternalArtifact, Settings
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.tables import markdown_table
from pytest_groundtruth.ggufio.quants import GGUF_TYPES, short_name
from pytest_groundtruth.report.trust import Trust, from_alarms
from pytest_groundtruth.runtimes.base import Runtime
from pytest_groundtruth.runtimes.registry import make_runtime
from pytest_groundtruth.suites.matrix import build_cases
from pytest_groundtruth.suites.spec import Box, get_suite, suite_names
from pytest_groundtruth.tools.engine_faults import ENGINE_FAULTS, FaultyLlamaCppRuntime
from pytest_groundtruth.tools.file_faults import FAULTS, FaultNotApplicable, broken_artifact
from pytest_groundtruth.tools.other_tools import correct_files

RUNTIME = "llamacpp"
# Every registered CPU suite but those that judge a derived model (a draft, a LoRA
# adapter) the fault harness does not make (``Suite.falsify``; name them to run them).
SUITES = tuple(s for s in suite_names()
               if get_suite(s).device == "cpu" and get_suite(s).falsify)
# The suites that read the artifact's bytes (``Suite.box``); every other one is black-box.
WHITE_BOX = tuple(s for s in suite_names() if get_suite(s).box is Box.WHITE)
FILE_FAULT_NAMES = tuple(FAULTS)
ENGINE_FAULT_NAMES = tuple(ENGINE_FAULTS)
README_BEGIN = "<!-- groundtruth falsify: suite table -->"
README_END = "<!-- end of groundtruth falsify's table -->"


@dataclass
class RowResult:
    label: str
    kind: str  # "correct" | "file" | "engine"
    quants: tuple[str, ...] = ()  # the quantizations the row ran at
    change: dict[str, str] = field(default_factory=dict)  # quant -> what the fault changed
    caught: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    evidence: dict[str, str] = field(default_factory=dict)  # suite -> first failure summary
    not_applicable: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # suite -> time spent; "total"


def short(quant: str) -> str:
    return "+".join(short_name(q) for q in quant.split("+"))


def _run_row(settings: Settings, cache_dir: Path, label: str, kind: str,
             suites: tuple[str, ...], prompts: list[str],
             runtime: Runtime | None = None) -> RowResult:
    row = RowResult(label, kind, settings.quantizations)
    started = time.perf_counter()
    ctx = Context.open(settings, cache_dir)
    if runtime is not None:
        ctx.engines.use_runtime(runtime)
    try:
        for case in build_cases(settings, prompts):
            if case.suite not in suites or case.skip:
                continue
            quant = case.quant if case.other is None else f"{case.quant}+{case.other}"
            began = time.perf_counter()
            try:
                result = get_suite(case.suite).judge(case, ctx)
                failed, summary = not result.passed, result.summary
            except Exception as exc:  # a crash or an error fails the test: it is caught too
                failed, summary = True, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            row.seconds[case.suite] = row.seconds.get(case.suite, 0.0) + (
                time.perf_counter() - began)
            if failed:
                if short(quant) not in row.caught[case.suite]:
                    row.caught[case.suite].append(short(quant))
                row.evidence.setdefault(case.suite, f"{case.name}: {summary}")
    finally:
        ctx.close()
    row.seconds["total"] = time.perf_counter() - started
    return row


def falsify(settings: Settings, cache_dir: Path, model: str, quants: tuple[str, ...],
            faults: Sequence[str] = FILE_FAULT_NAMES,
            engine_faults: Sequence[str] = ENGINE_FAULT_NAMES,
            suites: tuple[str, ...] = SUITES, other_tools: bool = True,
            progress: bool = True) -> list[RowResult]:
    """Every row: the correct files, then each file fault, then each engine fault."""

    def say(text: str) -> None:
        if progress:
            print(f"falsify: {model}: {text}", file=sys.stderr, flush=True)

    def done(row: RowResult) -> RowResult:
        times = ", ".join(f"{k} {v:.0f}s" for k, v in row.seconds.items())
        say(f"  {row.label}: {times}")
        return row

    base = replace(settings, models=(model,), runtimes=(RUNTIME,), quantizations=quants,
                   suites=suites, artifacts=())
    ctx = Context.open(base, cache_dir)
    prompts = list(ctx.inputs.prompts)
    correct = {q: ctx.engines.artifact(model, RUNTIME, q) for q in quants}
    resolved = ctx.engines.model(model)
    ctx.close()
    say("correct conversion")
    rows = [done(_run_row(base, cache_dir, "correct conversion", "correct", suites, prompts))]
    if other_tools:
        offered = make_runtime(RUNTIME, base).quantizations
        for other in correct_files(cache_dir, resolved, offered):
            if other.path is None:
                rows.append(RowResult(other.label, "correct", not_applicable=other.recipe))
                continue
            say(other.label)
            external = ExternalArtifact(model, RUNTIME, other.quant, other.path)
            row = _run_row(replace(base, quantizations=(other.quant,), artifacts=(external,)),
                           cache_dir, other.label, "correct", suites, prompts)
            row.change = {other.quant: other.recipe}
            rows.append(done(row))
    for fault in faults:
        say(f"file fault {fault}")
        artifacts, changes = [], {}
        try:
            for q, art in correct.items():
                path, changes[q] = broken_artifact(cache_dir, art.path, art.key, fault)
                artifacts.append(ExternalArtifact(model, RUNTIME, q, path))
        except FaultNotApplicable as exc:
            rows.append(RowResult(fault, "file", not_applicable=str(exc)))
            continue
        row = _run_row(replace(base, artifacts=tuple(artifacts)), cache_dir, fault, "file",
                       suites, prompts)
        row.change = changes
        rows.append(done(row))
    for fault in engine_faults:
        say(f"engine fault {fault}")
        files = tuple(ExternalArtifact(model, RUNTIME, q, art.path) for q, art in correct.items())
        runtime = FaultyLlamaCppRuntime(fault)
        runtime.name = RUNTIME
        row = _run_row(replace(base, artifacts=files), cache_dir, fault, "engine", suites,
                       prompts, runtime)
        row.change = {"engine": ENGINE_FAULTS[fault].summary}
        rows.append(done(row))
    return rows


# --------------------------------------------------------------------------- verdicts


def false_alarms(rows: Sequence[RowResult]) -> dict[str, set[str]]:
    """suite -> the quantizations (short names) at which it failed a correct file."""
    alarms: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.kind == "correct":
            for suite, quants in row.caught.items():
                alarms[suite].update(quants)
    return alarms


def full(label: str) -> str:
    """The quantization name of a short name (``q8`` -> ``int8``; pairs joined by ``+``)."""
    names = {short_name(q): q for q in GGUF_TYPES}
    return "+".join(names.get(q, q) for q in label.split("+"))


def trust_facts(model: str, rows: Sequence[RowResult], suites: Sequence[str] = SUITES
                ) -> Trust:
    """What the score trusts (:mod:`pytest_groundtruth.report.trust`): per suite, the
    quantizations at which it failed a correct file."""
    correct = [r for r in rows if r.kind == "correct" and not r.not_applicable]
    measured = sorted({q for r in correct for q in r.quants})
    labels = ", ".join(r.label for r in correct)
    return from_alarms({s: [full(q) for q in qs] for s, qs in false_alarms(rows).items()},
                       measured, f"{model} on {RUNTIME}: {len(correct)} correct files "
                       f"({labels})", suites)


def trusted(rows: Sequence[RowResult], suites: Sequence[str], quant: str) -> list[str]:
    """The black-box suites that raised no false alarm at ``quant`` (short name)."""
    alarms = false_alarms(rows)
    return [s for s in suites if s not in WHITE_BOX and quant not in alarms.get(s, set())]


def faults_of(rows: Sequence[RowResult]) -> list[RowResult]:
    return [r for r in rows if r.kind != "correct" and not r.not_applicable]


def power(rows: Sequence[RowResult], suites: Sequence[str], quant: str
          ) -> tuple[int, int, int, list[str]]:
    """(caught by a trusted black-box suite, caught by the white-box suite, faults, the
    faults no trusted black-box suite caught) at ``quant`` (short name)."""
    quiet = trusted(rows, suites, quant)
    faults = faults_of(rows)
    black = [r for r in faults if any(quant in r.caught.get(s, []) for s in quiet)]
    white = [r for r in faults if any(quant in r.caught.get(s, []) for s in WHITE_BOX)]
    missed = [r.label for r in faults if r not in black]
    return len(black), len(white), len(faults), missed


def missed(rows: Sequence[RowResult]) -> list[str]:
    """Faults no suite caught at all (the target is none)."""
    return [r.label for r in faults_of(rows) if not any(r.caught.values())]


# --------------------------------------------------------------------------- report


def suite_table(rows: Sequence[RowResult], suites: Sequence[str],
                quants: Sequence[str]) -> list[str]:
    """Per suite: black or white box, its false alarms, and its catches per quantization
    (counting only where it raised no false alarm)."""
    alarms = false_alarms(rows)
    faults = faults_of(rows)
    body = []
    for suite in suites:
        box = "white" if suite in WHITE_BOX else "black"
        cells = []
        for q in (short(q) for q in quants):
            n = sum(1 for r in faults if q in r.caught.get(suite, []))
            cells.append(f"{n}/{len(faults)}" + (" (false alarms)" if q in alarms.get(suite, ())
                                                 else ""))
        wrong = sorted(alarms.get(suite, set()))
        body.append([f"`{suite}`", box, " ".join(wrong) or "none", *cells])
    return markdown_table(["suite", "box", "false alarms on correct files at",
                           *(f"caught at {short(q)}" for q in quants)], body)


def power_table(rows: Sequence[RowResult], suites: Sequence[str],
                quants: Sequence[str]) -> list[str]:
    """Per quantization: black-box and white-box catches, and what the black box missed."""
    body = []
    for q in (short(q) for q in quants):
        black, white, total, escaped = power(rows, suites, q)
        body.append([q, f"{black}/{total} ({100 * black / max(total, 1):.0f} %)",
                     ", ".join(f"`{s}`" for s in trusted(rows, suites, q)) or "none",
                     f"{white}/{total}", ", ".join(escaped) or "-"])
    return markdown_table(["quant", "black box catches", "black-box suites without false "
                           "alarms", "white box catches", "missed by the black box"], body)


def render(model: str, rows: list[RowResult], suites: tuple[str, ...],
           quants: tuple[str, ...]) -> str:
    legend = ", ".join(f"{short(q)} = {q}" for q in quants)
    out = [
        "<!-- generated by `groundtruth falsify`; do not edit by hand -->",
        "",
        f"### {model} on llama.cpp ({legend})",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}. "
        f"{len(faults_of(rows))} faults ({sum(r.kind == 'file' for r in faults_of(rows))} in "
        f"the file, {sum(r.kind == 'engine' for r in faults_of(rows))} in the engine), "
        f"{sum(r.kind == 'correct' and not r.not_applicable for r in rows)} correct files.",
        "",
        "#### Power: black box and white box",
        "",
        "A fault counts as caught by the black box at a quantization when a black-box suite "
        "that raised no false alarm on any correct file at that quantization failed it; the "
        "white box is the integrity suite, which reads the file.",
        "",
    ]
    out += power_table(rows, suites, quants)
    out += ["", "#### Per suite", "", *suite_table(rows, suites, quants), ""]
    out += ["#### Per file",
            "",
            "A cell lists the quantizations at which the suite failed at least one test: on "
            "a broken file or engine that is a catch, on a correct file a false alarm. `+` "
            "joins the two quantizations a pair suite compares.",
            ""]
    head = ["file", "kind", *suites, "black box", "white box"]
    table = []
    for row in rows:
        if row.not_applicable:
            table.append([row.label, row.kind, f"not applicable: {row.not_applicable}",
                          *([""] * (len(suites) + 1))])
            continue
        cells = [" ".join(row.caught.get(s, [])) or "-" for s in suites]
        by_black = sorted({q for s in suites if s not in WHITE_BOX
                           for q in row.caught.get(s, [])})
        by_white = sorted({q for s in WHITE_BOX for q in row.caught.get(s, [])})
        label = row.label if row.kind != "correct" else f"{row.label} (correct)"
        table.append([label, row.kind, *cells, " ".join(by_black) or "-",
                      " ".join(by_white) or "-"])
    out += markdown_table(head, table)
    out += ["", "What each row changed, and the first failure of each suite that failed it:",
            ""]
    for row in rows:
        if row.not_applicable:
            continue
        change = "; ".join(f"{short(q)}: {c}" for q, c in row.change.items())
        out.append(f"- **{row.label}**" + (f" ({change})" if change else ""))
        for suite in suites:
            if suite in row.evidence:
                out.append(f"  - `{suite}`: {row.evidence[suite]}")
    return "\n".join(out) + "\n"


def readme_section(rows: Sequence[RowResult], suites: Sequence[str],
                   quants: Sequence[str]) -> str:
    """The power and suite tables for the README, between its markers."""
    lines = [README_BEGIN, "", *power_table(rows, suites, quants), "",
             *suite_table(rows, suites, quants), "", README_END]
    return "\n".join(lines)


def replace_readme_section(readme: str, section: str) -> str:
    """``readme`` with the text between the markers replaced by ``section``."""
    start, end = readme.find(README_BEGIN), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no '{README_BEGIN}' ... '{README_END}' markers")
    return readme[:start] + section + readme[end + len(README_END):]
