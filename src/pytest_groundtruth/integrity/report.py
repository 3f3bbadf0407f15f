"""Words and tables for an :class:`~.findings.IntegrityReport`.

:func:`summary` is one line naming the first offending field (metadata first: a wrong
hyperparameter explains everything after it) or else the worst tensor or the first
string the tokenizers disagree on. :func:`notes` gives each section's status and, for
failures, a table that stops after :data:`MAX_LISTED` rows (the results JSON keeps all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_groundtruth.core.tables import text_table
from pytest_groundtruth.integrity.findings import (
    FAILED,
    SKIPPED,
    IntegrityReport,
    MetadataFinding,
    Section,
    TensorFinding,
    TokenizerFinding,
)

MAX_LISTED = 12
UNITS = {"metadata": "fields", "tokenizer": "strings", "tensors": "tensors"}
TEXT_WIDTH = 40


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if value is None:
        return "absent"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _clip(text: str, width: int = TEXT_WIDTH) -> str:
    shown = repr(text)
    return shown if len(shown) <= width else shown[: width - 4] + "...'"


def _ids(ids: Sequence[int], start: int, width: int = 6) -> str:
    window = list(ids[max(start - 1, 0): start + width])
    prefix = "..." if start > 1 else ""
    suffix = "..." if start + width < len(ids) else ""
    return f"[{prefix}{', '.join(map(str, window))}{suffix}]"


def _num(value: float | None, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


def describe_metadata(f: MetadataFinding) -> str:
    return (f"metadata {f.field} ({f.key}): the source says {_value(f.expected)} "
            f"({f.source}), the artifact {_value(f.actual)}"
            + (f" [{f.note}]" if f.note else ""))


def describe_tensor(f: TensorFinding) -> str:
    where = f.artifact_name if f.artifact_name == f.name else f"{f.artifact_name} ({f.name})"
    numbers = ""
    if f.rel_error is not None and f.expected_rel_error is not None:
        numbers = (f" [rel error {_num(f.rel_error)}, expected {_num(f.expected_rel_error)}"
                   f" for {f.qtype}, bound {_num(f.max_rel_error)}]")
    return f"tensor {where}: {f.problem}{numbers}"


def describe_tokenizer(f: TokenizerFinding) -> str:
    at = f.first_difference
    if f.problem == "encode":
        return (f"tokenizer: {_clip(f.text)} encodes to {_ids(f.actual_ids, at)}, the "
                f"reference to {_ids(f.expected_ids, at)} (first difference at token {at})")
    return (f"tokenizer: the reference ids of {_clip(f.text)} decode to "
            f"{_clip(f.actual_text)}, the reference text is {_clip(f.expected_text)}")


def problems(report: IntegrityReport) -> list[str]:
    """Every failing finding in one line each, most telling first."""
    out = [describe_metadata(f) for f in report.metadata.failures]
    out += [describe_tensor(f) for f in report.tensors.failures]
    out += [describe_tokenizer(f) for f in report.tokenizer.failures]
    out += [f"{s.name}: {s.reason}" for s in report.sections
            if s.status == FAILED and not s.failures]  # a failure with nothing to list
    return out


def _section_line(s: Section) -> str:
    if s.status == SKIPPED:
        return f"{s.name}: skipped: {s.reason}"
    unit = UNITS[s.name]
    bad = len(s.failures)
    if s.status == FAILED and not bad:
        return f"{s.name}: failed: {s.reason}"
    head = (f"{s.name}: {bad} of {s.checked} {unit} wrong" if s.status == FAILED
            else f"{s.name}: {s.checked} {unit} consistent with the source")
    return f"{head} ({s.reason})" if s.reason else head


UNKNOWN_LAYOUT = "no layout rules are known"


def caveats(report: IntegrityReport) -> list[str]:
    """What the verdict could not rest on (an architecture without layout rules)."""
    return [n for n in report.tensors.notes if n.startswith(UNKNOWN_LAYOUT)]


def summary(report: IntegrityReport) -> str:
    found = problems(report)
    caveat = "".join(f" [{c}]" for c in caveats(report))
    if found:
        counts = ", ".join(f"{len(s.failures) or 1} {s.name}" for s in report.sections
                           if s.status == FAILED)
        return f"{len(found)} integrity problem(s) ({counts}); first: {found[0]}{caveat}"
    parts = [f"{s.name} skipped" if s.status == SKIPPED
             else f"{s.checked} tensors" if s.name == "tensors"
             else f"{s.name} {s.checked} {UNITS[s.name]}" for s in report.sections]
    text = "artifact consistent with the source: " + ", ".join(parts)
    extra = []
    identical = report.details.get("identical")
    if identical:
        extra.append(f"{identical} identical to the reference encoding")
    worst = worst_tensor(report)
    if worst is not None and worst[1] > 0:
        extra.append(f"worst {worst[0]} at {worst[1]:.2f} of its error bound")
    return text + (f" ({'; '.join(extra)})" if extra else "") + caveat


def worst_tensor(report: IntegrityReport) -> tuple[str, float] | None:
    rows = report.details.get("tensors", [])
    best: tuple[str, float] | None = None
    for row in rows:
        err, bound = row.get("rel_error"), row.get("max_rel_error")
        if isinstance(err, float) and isinstance(bound, float) and bound > 0:
            ratio = err / bound
            if best is None or ratio > best[1]:
                best = (row["artifact_name"], ratio)
    return best


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return text_table(header, rows)


def _limited(rows: list[list[str]], limit: int) -> tuple[list[list[str]], str]:
    if len(rows) <= limit:
        return rows, ""
    return rows[:limit], f"... and {len(rows) - limit} more (all in the results JSON)"


def metadata_table(findings: Sequence[MetadataFinding], limit: int = MAX_LISTED) -> list[str]:
    rows = [[f.field, f.key, _value(f.expected), _value(f.actual), f.source] for f in findings]
    shown, more = _limited(rows, limit)
    lines = _table(("field", "artifact key", "source", "artifact", "source value from"), shown)
    return lines + ([more] if more else [])


def tensor_table(findings: Sequence[TensorFinding], limit: int = MAX_LISTED) -> list[str]:
    rows = []
    for f in findings:
        scale = "-" if f.scale is None else f"x{f.scale:.5f}"
        bias = "-" if f.bias is None else f"{f.bias:+.2e}"
        rows.append([f.artifact_name, f.name if f.name != f.artifact_name else "",
                     "[" + ", ".join(map(str, f.shape)) + "]", f.qtype, _num(f.rel_error),
                     _num(f.expected_rel_error), _num(f.max_rel_error), scale, bias,
                     f.problem])
    shown, more = _limited(rows, limit)
    lines = _table(("tensor", "source", "shape", "type", "rel error", "expected", "bound",
                    "scale", "bias", "problem"), shown)
    return lines + ([more] if more else [])


def tokenizer_table(findings: Sequence[TokenizerFinding], limit: int = MAX_LISTED) -> list[str]:
    rows = []
    for f in findings:
        at = f.first_difference
        if f.problem == "encode":
            rows.append([_clip(f.text), "encode", str(at), _ids(f.expected_ids, at),
                         _ids(f.actual_ids, at)])
        else:
            rows.append([_clip(f.text), "decode", "-", _clip(f.expected_text),
                         _clip(f.actual_text)])
    shown, more = _limited(rows, limit)
    lines = _table(("text", "check", "at", "reference", "engine"), shown)
    return lines + ([more] if more else [])


def notes(report: IntegrityReport, limit: int = MAX_LISTED) -> tuple[str, ...]:
    """Section lines, each failing section's table, then the sections' own remarks."""
    lines: list[str] = []
    for section in report.sections:
        lines.append(_section_line(section))
        failures = section.failures
        if not failures:
            continue
        if section.name == "metadata":
            table = metadata_table(failures, limit)
        elif section.name == "tensors":
            table = tensor_table(failures, limit)
        else:
            table = tokenizer_table(failures, limit)
        lines.extend("  " + row for row in table)
    for section in report.sections:
        lines.extend(f"{section.name}: {n}" for n in section.notes)
    return tuple(lines)
