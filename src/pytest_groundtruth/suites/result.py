"""What a suite concludes: :class:`SuiteResult`, with the token table that explains it.

A failing parity test must say why in terms a runtime engineer can act on: the measured
value against the bound (and where the bound came from), the first divergence, a table
of the positions that differ (oracle token id and text, runtime token id and text, the
oracle's log-probability of the runtime's token, near ties), the artifact and the exact
call that produced the output. :meth:`SuiteResult.explain` renders exactly that; the
HTML report and the ticket use the same data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_groundtruth.config.settings import Bound
from pytest_groundtruth.context import Context
from pytest_groundtruth.core.hashing import file_sha256
from pytest_groundtruth.core.tables import text_table
from pytest_groundtruth.framework import auto
from pytest_groundtruth.framework.bounds import BUILT, resolve
from pytest_groundtruth.measures.near_ties import MARGIN
from pytest_groundtruth.oracle.format import Oracle
from pytest_groundtruth.suites.case import Case
from pytest_groundtruth.suites.spec import get_suite

MAX_TABLE_ROWS = 12


@dataclass(frozen=True)
class TokenRow:
    position: int
    oracle_id: int | None
    oracle_text: str
    runtime_id: int | None
    runtime_text: str
    # The oracle's log-probability of the runtime's token at this position: None when the
    # oracle did not store it (outside its top-k: the value is below ``floor``).
    oracle_logprob: float | None
    floor: float | None  # the oracle's k-th log-probability at this position
    near_tie: bool
    margin: float | None  # the oracle's top-1 minus top-2 log-probability


@dataclass(frozen=True)
class SuiteResult:
    case: Case
    passed: bool
    summary: str  # one line: measured vs bound
    measured: Any = None
    bound: Any = None
    bound_origin: str = ""
    first_divergence: int | None = None
    rows: tuple[TokenRow, ...] = ()
    artifact: str = ""  # path of the artifact under test
    recipe: str = ""  # how the artifact was produced
    calls: tuple[str, ...] = ()  # the exact calls that produced the outputs
    notes: tuple[str, ...] = ()  # near-tie exemptions, warnings: reported, never silent
    details: dict[str, Any] = field(default_factory=dict)
    table: tuple[str, ...] = ()  # a preformatted report (integrity), shown verbatim
    # The engine failure (a FailureKind value: "crashed", "timeout", ...) behind a verdict
    # that a suite reached by catching it (the gateway), so the outcome can say so.
    fault: str = ""

    def explain(self) -> str:
        lines = [f"{self.case.name}: {self.summary}"]
        if self.bound is not None:
            lines.append(f"  bound: {self.bound} ({self.bound_origin or 'default'})")
        if self.first_divergence is not None and "first divergence" not in self.summary:
            lines.append(f"  first divergence at position {self.first_divergence}")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.table:
            lines.append("")
            lines.extend("  " + row for row in self.table)
        if self.rows:
            lines.append("")
            lines.extend("  " + row for row in render_table(self.rows))
        if self.artifact:
            lines.append(f"\n  artifact: {self.artifact}")
        if self.recipe:
            lines.append(f"  built by: {self.recipe}")
        for call in self.calls:
            lines.append(f"  output of: {call}")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuiteResult:
        """The inverse of :meth:`to_dict` (results travel as JSON from xdist workers)."""
        fields = {k: v for k, v in data.items() if k not in ("case", "rows")}
        case = {k: v for k, v in data["case"].items() if k not in ("id", "name")}
        return cls(case=Case(**case), rows=tuple(TokenRow(**r) for r in data["rows"]),
                   **{**fields, "calls": tuple(fields.get("calls", ())),
                      "notes": tuple(fields.get("notes", ())),
                      "table": tuple(fields.get("table", ()))})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["case"] = {**asdict(self.case), "id": self.case.id, "name": self.case.name}
        return data


def _fmt_lp(row: TokenRow) -> str:
    if row.oracle_logprob is not None:
        return f"{row.oracle_logprob:.3f}"
    if row.floor is not None:
        return f"< {row.floor:.2f}"
    return "?"


def render_table(rows: Sequence[TokenRow]) -> list[str]:
    header = ("pos", "oracle id", "oracle text", "runtime id", "runtime text",
              "oracle logp(runtime)", "near tie")
    body = [
        (
            str(r.position),
            "-" if r.oracle_id is None else str(r.oracle_id),
            repr(r.oracle_text),
            "-" if r.runtime_id is None else str(r.runtime_id),
            repr(r.runtime_text),
            _fmt_lp(r),
            f"yes (margin {r.margin:.3f})" if r.near_tie and r.margin is not None else "",
        )
        for r in rows
    ]
    return text_table(header, body)


def token_rows(
    reference: Sequence[int],
    tokens: Sequence[int],
    decode: Callable[[int], str],
    positions: Sequence[int],
    oracle: Oracle | None = None,
    limit: int = MAX_TABLE_ROWS,
) -> tuple[TokenRow, ...]:
    """Table rows for ``positions`` (at most ``limit``) comparing ``tokens`` with
    ``reference``; with ``oracle`` (whose tokens are the reference) also the oracle's
    log-probability of the runtime's token and the near ties."""
    rows = []
    # An original-format oracle has no top-k: the table shows the tokens only.
    steps = (oracle.topk if oracle else None) or ()
    near = {i for i, s in enumerate(steps) if s.margin < MARGIN}  # the near-tie rule's
    for pos in list(positions)[:limit]:
        oracle_id = reference[pos] if pos < len(reference) else None
        runtime_id = tokens[pos] if pos < len(tokens) else None
        step = steps[pos] if pos < len(steps) else None
        logprob = floor = margin = None
        if step is not None:
            floor = step.logprobs[-1]
            margin = step.margin if math.isfinite(step.margin) else None
            if runtime_id in step.ids:
                logprob = step.logprobs[step.ids.index(runtime_id)]
        rows.append(
            TokenRow(
                position=pos,
                oracle_id=oracle_id,
                oracle_text="" if oracle_id is None else decode(oracle_id),
                runtime_id=runtime_id,
                runtime_text="" if runtime_id is None else decode(runtime_id),
                oracle_logprob=logprob,
                floor=floor,
                near_tie=pos in near,
                margin=margin,
            )
        )
    return tuple(rows)


def bound_of(ctx: Context, case: Case, param: str) -> Bound:
    """The bound on ``param`` of the case's suite, for exactly this case, with where it came
    from (:func:`pytest_groundtruth.framework.bounds.resolve`)."""
    suite = get_suite(case.suite)
    automatic = None
    if suite.calibration is not None:
        calibration = suite.calibration

        def automatic() -> tuple[dict[str, float] | None, str]:
            return auto.bounds(ctx, case.suite, calibration, case.model, case.runtime,
                               case.quant)

    def artifact() -> str:
        supplied = ctx.settings.supplied_artifact(case.model, case.runtime, case.quant)
        return BUILT if supplied is None else file_sha256(supplied)

    return resolve(ctx.settings, case.suite, param,
                   suite.default(param, case.quant, case.runtime), suite.calibration,
                   model=case.model, runtime=case.runtime, quant=case.quant,
                   prompt=case.prompt, automatic=automatic, artifact=artifact)


def token_table(ctx: Context, case: Case, reference: Sequence[int], tokens: Sequence[int],
                positions: Sequence[int], oracle: Oracle | None = None) -> tuple[TokenRow, ...]:
    """Failure-table rows comparing ``tokens`` with ``reference`` (the oracle's or not)."""
    return token_rows(reference, tokens, lambda t: ctx.inputs.decode(case.model, t), positions,
                      oracle)
