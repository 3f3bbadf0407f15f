"""``groundtruth compare``: the oracle's text and each runtime's, side by side, per prompt.

One model (``--model SLUG``): its float32 oracle against the model on every selected
runtime and quantization (``--runtime``, ``--quant``; default: the configured ones).
Two models (``--model TEACHER --model STUDENT``, e.g. a distilled student): the teacher's
oracle against the student on the selected runtimes (default: transformers float32, the
student's own reference), with the teacher-forced agreement of the student against the
teacher where they share a tokenizer.

Per prompt: both texts with the first difference marked, how many generated positions
agree, and a position table (``=`` where a runtime chose the oracle's token, its token
where it did not, ``>`` at the first divergence, ``·`` after the runtime stopped), plus,
for runtimes that can score a sequence, the teacher-forced top-1 agreement and
KL(oracle || runtime) over the oracle's top-k (the ``agreement`` suite's measure, per
prompt). ``--format text|markdown|json``.

Every engine result comes through the result cache, like the test suites' own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from pytest_groundtruth.context import Context
from pytest_groundtruth.core.failures import EngineFailure, RuntimeUnavailable
from pytest_groundtruth.core.hashing import text_sha256
from pytest_groundtruth.core.tables import markdown_table, text_table
from pytest_groundtruth.measures.agreement import agreement
from pytest_groundtruth.models.sources import ModelUnavailable
from pytest_groundtruth.oracle.format import Oracle
from pytest_groundtruth.report.sidebyside import (
    ENDED,
    SideBySide,
    marked,
    position_cell,
    side_by_side,
)
from pytest_groundtruth.runtimes.base import Artifact, Capability
from pytest_groundtruth.runtimes.registry import make_runtime

FORMATS = ("text", "markdown", "json")
# Two models and no --runtime / --quant: the student's own float32 reference.
TWO_MODEL_RUNTIMES, TWO_MODEL_QUANTS = ("transformers",), ("float32",)


class CompareError(ValueError):
    """The comparison cannot be made as asked (the message says why)."""


@dataclass(frozen=True)
class Column:
    """One model on one runtime at one quantization, on one prompt."""

    model: str
    runtime: str
    quant: str
    view: SideBySide | None  # None when it could not run (``error``)
    error: str = ""
    top1: float | None = None  # teacher-forced, against the oracle's tokens
    kl: float | None = None

    @property
    def label(self) -> str:
        return f"{self.runtime}/{self.quant}"


@dataclass(frozen=True)
class PromptComparison:
    prompt: str
    prompt_text: str
    oracle_text: str
    oracle_pieces: tuple[str, ...]  # the oracle's tokens as text
    near_ties: tuple[int, ...]
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Comparison:
    reference: str  # what the oracle side is
    teacher: str
    student: str | None
    shared_tokenizer: bool
    prompts: tuple[PromptComparison, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for prompt, found in zip(data["prompts"], self.prompts, strict=True):
            for column, col in zip(prompt["columns"], found.columns, strict=True):
                column["view"] = col.view.to_json() if col.view is not None else None
        return data


def targets(ctx: Context, model: str, runtimes: Sequence[str], quants: Sequence[str]
            ) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(model, runtime, quant) for each runtime x quantization it offers; notes for
    runtimes that offer none of them."""
    found: list[tuple[str, str, str]] = []
    notes: list[str] = []
    for name in runtimes:
        offered = make_runtime(name, ctx.settings).quantizations
        chosen = [q for q in quants if q in offered]
        if not chosen:
            notes.append(f"runtime {name!r} offers none of {', '.join(quants)} "
                         f"(it has: {', '.join(offered)})")
        found.extend((model, name, q) for q in chosen)
    return found, notes


def vocabulary(ctx: Context, slug: str) -> dict[str, int]:
    from tokenizers import Tokenizer

    path = ctx.engines.model(slug).path / "tokenizer.json"
    vocab: dict[str, int] = Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
    return vocab


def teacher_forced(ctx: Context, artifact: Artifact, oracle: Oracle) -> tuple[float, float]:
    """(top-1 agreement, mean KL) of ``artifact`` scoring the oracle's own sequence."""

    def make() -> dict[str, Any]:
        runner = ctx.engines.runner(artifact)
        ids = list(oracle.prompt_tokens) + list(oracle.tokens)
        rows = runner.score(ids, len(oracle.prompt_tokens))
        found = agreement(oracle.steps, oracle.tokens, np.asarray(rows))
        return {"top1": sum(p.top1 for p in found) / len(found),
                "kl": sum(p.kl for p in found) / len(found)}

    return ctx.results.cached("compare-agreement", artifact, text_sha256(oracle.to_json()),
                              make, lambda data: (float(data["top1"]), float(data["kl"])))


def _column(ctx: Context, target: tuple[str, str, str], oracle: Oracle, shared: bool,
            reference: str) -> Column:
    model, runtime, quant = target
    try:
        artifact = ctx.engines.artifact(model, runtime, quant)
        gen = ctx.results.generation(artifact, oracle.prompt_name)
    except (RuntimeUnavailable, ModelUnavailable, EngineFailure) as exc:
        return Column(model, runtime, quant, None, error=str(exc).splitlines()[0])
    view = side_by_side(f"{runtime}/{quant}", oracle, gen.tokens, gen.text,
                        lambda t: ctx.inputs.decode(oracle.slug, t), reference,
                        lambda t: ctx.inputs.decode(model, t))
    if not shared:  # token ids of different vocabularies: only the texts compare
        return Column(model, runtime, quant, replace(view, positions=(),
                                                    first_divergence=None))
    top1 = kl = None
    if Capability.SCORE in ctx.engines.runtime(runtime).capabilities:
        top1, kl = teacher_forced(ctx, artifact, oracle)
    return Column(model, runtime, quant, view, top1=top1, kl=kl)


def compare(ctx: Context, models: Sequence[str], runtimes: Sequence[str],
            quants: Sequence[str]) -> Comparison:
    """The comparison of ``models[0]``'s oracle with ``models[-1]`` on each runtime and
    quantization."""
    if not 1 <= len(models) <= 2:
        raise CompareError(f"compare takes one model, or two (teacher, student); got "
                           f"{len(models)}: {', '.join(models)}")
    teacher, student = models[0], (models[1] if len(models) == 2 else None)
    subject = student or teacher
    chosen, notes = targets(ctx, subject, runtimes, quants)
    shared = True
    if student is not None:
        shared = vocabulary(ctx, teacher) == vocabulary(ctx, student)
        if not shared:
            notes.append(
                f"teacher {teacher!r} and student {student!r} do not share a tokenizer "
                f"({ctx.engines.model(teacher).path / 'tokenizer.json'} vs "
                f"{ctx.engines.model(student).path / 'tokenizer.json'}): texts only, no "
                "per-position agreement, no teacher-forced agreement or KL")
    reference = f"{teacher} float32 oracle"
    prompts = []
    for name in ctx.inputs.prompts:
        oracle = ctx.inputs.oracle(teacher, name)
        prompts.append(PromptComparison(
            prompt=name, prompt_text=oracle.prompt, oracle_text=oracle.text,
            oracle_pieces=tuple(ctx.inputs.decode(teacher, t) for t in oracle.tokens),
            near_ties=oracle.near_ties,
            columns=tuple(_column(ctx, t, oracle, shared, reference) for t in chosen)))
    return Comparison(reference, teacher, student, shared, tuple(prompts), tuple(notes))


# --------------------------------------------------------------------------- rendering


def _summary(column: Column) -> str:
    if column.view is None:
        return f"not run: {column.error}"
    view = column.view
    if view.positions:
        text = view.agreement_line()
    else:
        text = "identical text" if view.first_char is None else \
            f"texts differ from character {view.first_char}"
    if column.top1 is not None and column.kl is not None:
        text += f"; teacher-forced top-1 {column.top1:.3f}, KL {column.kl:.4f}"
    return text


def _rows(p: PromptComparison) -> tuple[list[str], list[list[str]]]:
    header = ["pos", "oracle", *(c.label for c in p.columns), "near tie"]
    length = max([len(p.oracle_pieces)] + [len(c.view.positions) for c in p.columns if c.view])
    rows = []
    for i in range(length):
        cells = [str(i), repr(p.oracle_pieces[i]) if i < len(p.oracle_pieces) else ENDED]
        for c in p.columns:
            if c.view is None or not c.view.positions:
                cells.append("")
            elif i < len(c.view.positions):
                cells.append(position_cell(c.view.positions[i], c.view.first_divergence))
            else:
                cells.append(ENDED)
        cells.append("yes" if i in p.near_ties else "")
        rows.append(cells)
    return header, rows


def _title(c: Comparison) -> str:
    if c.student is None:
        return f"{c.teacher}: the float32 oracle against each runtime"
    return f"teacher {c.teacher} (its float32 oracle) against student {c.student}"


def render_text(c: Comparison) -> str:
    lines = [f"groundtruth compare: {_title(c)}"]
    lines.extend(f"note: {n}" for n in c.notes)
    for p in c.prompts:
        lines.append("")
        lines.append(f"== prompt {p.prompt}: {p.prompt_text!r}")
        width = max([6, *(len(col.label) for col in p.columns)])
        lines.append(f"  {'oracle':<{width}}  {p.oracle_text!r}")
        for col in p.columns:
            if col.view is not None and col.view.first_char is not None:
                lines.append(f"  {col.label:<{width}}  "
                             f"{marked(col.view.runtime_text, col.view.first_char)}")
                lines.append(f"  {'':<{width}}  {_summary(col)}")
            else:
                lines.append(f"  {col.label:<{width}}  {_summary(col)}")
        if any(col.view is not None and col.view.positions for col in p.columns):
            header, rows = _rows(p)
            lines.append("")
            lines.extend("  " + row for row in text_table(header, rows))
    lines.append("")
    lines.append(f"(⟦ marks where a text first differs from the oracle's; in the tables {'='} "
                 f"is the oracle's token, > the first divergence, {ENDED} after the end)")
    return "\n".join(lines)


def render_markdown(c: Comparison) -> str:
    lines = [f"## {_title(c)}", ""]
    lines.extend(f"> {n}" for n in c.notes)
    for p in c.prompts:
        lines.extend(["", f"### `{p.prompt}`: `{p.prompt_text!r}`", ""])
        summary = [["oracle", f"`{p.oracle_text!r}`", ""]]
        for col in p.columns:
            text = "" if col.view is None else \
                f"`{marked(col.view.runtime_text, col.view.first_char)}`"
            summary.append([col.label, text, _summary(col)])
        lines.extend(markdown_table(["side", "text (⟦ first difference)", "agreement"], summary))
        if any(col.view is not None and col.view.positions for col in p.columns):
            header, rows = _rows(p)
            lines.extend(["", *markdown_table(header, rows)])
    return "\n".join(lines) + "\n"


def render(c: Comparison, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(c.to_json(), indent=2, ensure_ascii=False)
    if fmt == "markdown":
        return render_markdown(c)
    return render_text(c)
