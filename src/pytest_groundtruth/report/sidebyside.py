"""The oracle's generation and a runtime's, side by side, position by position.

A :class:`SideBySide` holds, for one prompt, both texts, where they first part (token
position and character offset) and per generated position both tokens with the
oracle's log-probability of each (the oracle stores its top-k per position: a runtime
token outside it is known only to lie below the k-th value, the *floor*), and whether
the oracle saw a near tie there. The HTML report (a failing test's view and every
test's chart) and ``groundtruth compare`` render the same data.

:func:`side_by_side` is pure; :func:`views_for` fetches what a test already generated
(from the result cache) to build its views.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pytest_groundtruth.context import Context
from pytest_groundtruth.measures.sequences import first_divergence
from pytest_groundtruth.oracle.format import Oracle
from pytest_groundtruth.suites.case import Case

SAME = "="  # a runtime cell that agrees with the oracle, in the position tables
ENDED = "·"  # the sequence has ended


@dataclass(frozen=True)
class Position:
    index: int
    oracle_id: int | None
    oracle_text: str
    runtime_id: int | None
    runtime_text: str
    oracle_logprob: float | None  # the oracle's log-probability of its own token
    runtime_logprob: float | None  # ... of the runtime's token; None: outside its top-k
    floor: float | None  # the oracle's k-th log-probability here
    near_tie: bool
    margin: float | None  # the oracle's top-1 minus top-2 log-probability

    @property
    def agree(self) -> bool:
        return self.oracle_id == self.runtime_id


@dataclass(frozen=True)
class SideBySide:
    prompt: str  # the prompt's name
    prompt_text: str
    label: str  # what produced the runtime side ("llamacpp/int8")
    reference: str  # what produced the oracle side ("smollm2-135m float32 oracle")
    oracle_text: str
    runtime_text: str
    first_divergence: int | None  # token position
    first_char: int | None  # character offset where the texts first differ
    positions: tuple[Position, ...]

    @property
    def agreed(self) -> int:
        """Positions where both generated the same token."""
        return sum(p.agree for p in self.positions)

    @property
    def compared(self) -> int:
        return len(self.positions)

    def agreement_line(self) -> str:
        if self.first_divergence is None:
            return f"identical ({self.compared}/{self.compared} positions agree)"
        return (f"first divergence at token {self.first_divergence} (character "
                f"{self.first_char}); {self.agreed}/{self.compared} positions agree")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["positions"] = [asdict(p) for p in self.positions]
        data["agreed"] = self.agreed
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SideBySide:
        fields = {k: v for k, v in data.items() if k not in ("positions", "agreed")}
        return cls(**fields, positions=tuple(Position(**p) for p in data["positions"]))


def first_char_difference(a: str, b: str) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


def side_by_side(label: str, oracle: Oracle, tokens: Sequence[int], text: str,
                 decode: Callable[[int], str], reference: str = "",
                 decode_runtime: Callable[[int], str] | None = None) -> SideBySide:
    """The oracle's generation against ``tokens`` / ``text`` on the oracle's prompt
    (``decode_runtime``: the runtime side's tokenizer, when it is another model's)."""
    show = decode_runtime or decode
    near = set(oracle.near_ties)
    positions = []
    for i in range(max(len(oracle.tokens), len(tokens))):
        oid = oracle.tokens[i] if i < len(oracle.tokens) else None
        rid = tokens[i] if i < len(tokens) else None
        step = oracle.steps[i] if i < len(oracle.steps) else None
        olp = rlp = floor = margin = None
        if step is not None:
            floor = step.logprobs[-1]
            margin = step.margin if step.margin != float("inf") else None
            if oid in step.ids:
                olp = step.logprobs[step.ids.index(oid)]
            if rid in step.ids:
                rlp = step.logprobs[step.ids.index(rid)]
        positions.append(Position(
            i, oid, "" if oid is None else decode(oid), rid, "" if rid is None else show(rid),
            olp, rlp, floor, i in near, margin))
    return SideBySide(
        prompt=oracle.prompt_name, prompt_text=oracle.prompt, label=label,
        reference=reference or f"{oracle.slug} {oracle.dtype} oracle",
        oracle_text=oracle.text, runtime_text=text,
        first_divergence=first_divergence(oracle.tokens, tokens),
        first_char=first_char_difference(oracle.text, text), positions=tuple(positions),
    )


def views_for(ctx: Context, case: Case) -> tuple[SideBySide, ...]:
    """The side-by-side views of what ``case`` generated: its prompt, or for a gateway
    (which generates every prompt) each prompt. Other artifact-level tests (perplexity,
    teacher-forced agreement, file checks) generate nothing and get none. Read from the
    result cache, where the test put them."""
    if case.device != "cpu":
        return ()  # GPU tests compare with GPU oracles
    if case.prompt is not None:
        prompts = [case.prompt]
    elif case.suite == "gateway":
        prompts = list(ctx.inputs.prompts)
    else:
        return ()
    artifact = ctx.engines.artifact(case.model, case.runtime, case.quant, case.device)
    views = []
    for name in prompts:
        oracle = ctx.inputs.oracle(case.model, name)
        gen = ctx.results.generation(artifact, name, case.device)
        views.append(side_by_side(f"{case.runtime}/{case.quant}", oracle, gen.tokens,
                                  gen.text, lambda t: ctx.inputs.decode(case.model, t)))
    return tuple(views)


# --------------------------------------------------------------------------- rendering


def marked(text: str, at: int | None, mark: str = "⟦") -> str:
    """``text`` as a Python literal with ``mark`` where it first differs (``at``)."""
    if at is None:
        return repr(text)
    return repr(text[:at])[:-1] + mark + repr(text[at:])[1:]


def position_cell(p: Position, first: int | None) -> str:
    if p.runtime_id is None:
        return ENDED
    if p.agree:
        return SAME
    return (">" if p.index == first else "") + repr(p.runtime_text)


def html_view(view: SideBySide) -> str:
    """Both texts in two columns, wrapped, the first difference highlighted."""
    def text_cell(text: str) -> str:
        at = view.first_char
        style = ' style="white-space:pre-wrap;word-break:break-word;margin:0"'
        if at is None:
            return f"<pre{style}>{html.escape(text)}</pre>"
        return (f"<pre{style}>{html.escape(text[:at])}<mark>"
                f"{html.escape(text[at:at + 1] or '∅')}</mark>{html.escape(text[at + 1:])}</pre>")

    return (f'<div class="gt-sidebyside"><p>prompt <b>{html.escape(view.prompt)}</b> '
            f"<code>{html.escape(repr(view.prompt_text))}</code>: "
            f"{html.escape(view.agreement_line())}</p>"
            '<table class="gt-side" border="1" cellpadding="4" '
            'style="table-layout:fixed;width:100%;border-collapse:collapse">'
            f"<thead><tr><th>{html.escape(view.reference)}</th>"
            f"<th>{html.escape(view.label)}</th></tr></thead><tbody><tr>"
            f'<td style="vertical-align:top">{text_cell(view.oracle_text)}</td>'
            f'<td style="vertical-align:top">{text_cell(view.runtime_text)}</td>'
            "</tr></tbody></table></div>")
