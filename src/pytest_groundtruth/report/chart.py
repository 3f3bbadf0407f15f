"""A small inline SVG chart of one side-by-side view: where a generation leaves the oracle.

Per generated position (x), the oracle's log-probability (y, 0 at the top) of its own
token (blue dots, joined) and of the runtime's token (orange squares, dashed line; the
same point where both agree). A runtime token outside the oracle's stored top-k is drawn
as a hollow triangle at the oracle's k-th log-probability (it lies somewhere below).
Near ties (the oracle's top two within its margin) are shaded yellow; the first
divergence is a red dashed line, and the runtime's points after it are faded, since from
there the two sequences are conditioned on different prefixes.

Plain SVG with ``<title>`` tooltips: no scripts, no external resources, so the chart
works in a self-contained pytest-html report and in any browser.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from pytest_groundtruth.report.sidebyside import Position, SideBySide

ORACLE = "#0d6efd"
RUNTIME = "#fd7e14"
DIVERGENCE = "#dc3545"
NEAR_TIE = "#fff3cd"
TOP, BOTTOM, LEFT, RIGHT = 26, 34, 46, 12
PLOT_HEIGHT = 110


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def svg(view: SideBySide) -> str:
    positions = view.positions
    n = max(len(positions), 1)
    step = max(8.0, min(18.0, 576 / n))
    width = max(LEFT + step * n + RIGHT, 520.0)  # room for the legend
    height = TOP + PLOT_HEIGHT + BOTTOM
    known = [v for p in positions for v in (p.oracle_logprob, p.runtime_logprob, p.floor)
             if v is not None and math.isfinite(v)]
    low = min(-1.0, math.floor(min(known, default=-1.0)))

    def x(i: int) -> float:
        return LEFT + step * (i + 0.5)

    def y(v: float) -> float:
        return TOP + PLOT_HEIGHT * (v / low)

    first = view.first_divergence
    title = (f"{view.label} vs {view.reference}, prompt {view.prompt}: "
             f"{view.agreement_line()}")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="gt-chart" width="{width:.0f}" '
           f'height="{height}" viewBox="0 0 {width:.0f} {height}" role="img" '
           f'font-family="sans-serif" font-size="10"><title>{html.escape(title)}</title>']
    for p in positions:  # near ties
        if p.near_tie:
            margin = f"{p.margin:.3f}" if p.margin is not None else "?"
            out.append(f'<rect class="near-tie" x="{x(p.index) - step / 2:.1f}" y="{TOP}" '
                       f'width="{step:.1f}" height="{PLOT_HEIGHT}" fill="{NEAR_TIE}">'
                       f"<title>position {p.index}: near tie (oracle margin {margin})</title>"
                       "</rect>")
    for v in (0.0, low / 2, low):  # grid and y labels
        out.append(f'<line x1="{LEFT}" x2="{width - RIGHT:.1f}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}" stroke="#ddd"/><text x="{LEFT - 4}" y="{y(v) + 3:.1f}" '
                   f'text-anchor="end">{_fmt(v)}</text>')
    out.append('<text x="4" y="10">log p (oracle)</text>')
    for i in range(0, n, 5):
        out.append(f'<text x="{x(i):.1f}" y="{TOP + PLOT_HEIGHT + 14}" '
                   f'text-anchor="middle">{i}</text>')
    if first is not None:
        fx = x(first) - step / 2
        out.append(f'<line class="first-divergence" x1="{fx:.1f}" x2="{fx:.1f}" y1="{TOP - 4}" '
                   f'y2="{TOP + PLOT_HEIGHT}" stroke="{DIVERGENCE}" stroke-dasharray="4 2">'
                   f"<title>first divergence at position {first}</title></line>"
                   f'<text x="{fx + 2:.1f}" y="{TOP - 6}" fill="{DIVERGENCE}">'
                   f"first divergence @{first}</text>")
    out.append(_series(positions, "oracle", ORACLE, x, y, first))
    out.append(_series(positions, "runtime", RUNTIME, x, y, first))
    out.append(_legend(TOP + PLOT_HEIGHT + 28))
    out.append("</svg>")
    return "".join(out)


def _value(p: Position, side: str) -> tuple[float | None, bool]:
    """(y value, below the stored top-k) of one side's token at ``p``."""
    if side == "oracle":
        return p.oracle_logprob, False
    if p.runtime_id is None:
        return None, False
    if p.runtime_logprob is not None:
        return p.runtime_logprob, False
    return p.floor, True


def _series(positions: tuple[Position, ...], side: str, colour: str,
            x: Callable[[int], float], y: Callable[[float], float], first: int | None) -> str:
    points, marks = [], []
    for p in positions:
        value, below = _value(p, side)
        if value is None:
            continue
        px, py = x(p.index), y(value)
        points.append(f"{px:.1f},{py:.1f}")
        token = p.oracle_text if side == "oracle" else p.runtime_text
        tip = (f"position {p.index}: {side} token {token!r}, oracle log p "
               + (f"< {value:.3f} (outside its top-k)" if below else f"{value:.3f}"))
        faded = ' opacity="0.45"' if side == "runtime" and first is not None and p.index > first \
            else ""
        if side == "oracle":
            marks.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}">'
                         f"<title>{html.escape(tip)}</title></circle>")
        elif below:
            marks.append(f'<path class="below-topk" d="M{px - 4:.1f},{py:.1f} h8 l-4,7 z" '
                         f'fill="white" stroke="{colour}"{faded}>'
                         f"<title>{html.escape(tip)}</title></path>")
        elif not p.agree:
            marks.append(f'<rect x="{px - 3:.1f}" y="{py - 3:.1f}" width="6" height="6" '
                         f'fill="{colour}"{faded}><title>{html.escape(tip)}</title></rect>')
    dash = ' stroke-dasharray="3 2"' if side == "runtime" else ""
    line = (f'<polyline class="series-{side}" points="{" ".join(points)}" fill="none" '
            f'stroke="{colour}" stroke-width="1.2"{dash}/>') if points else ""
    return line + "".join(marks)


def _legend(base: float) -> str:
    x0, t, m = LEFT, base, base - 3
    items = [
        f'<circle cx="{x0}" cy="{m}" r="3" fill="{ORACLE}"/>'
        f'<text x="{x0 + 6}" y="{t}">oracle token</text>',
        f'<rect x="{x0 + 76}" y="{m - 3}" width="6" height="6" fill="{RUNTIME}"/>'
        f'<text x="{x0 + 85}" y="{t}">runtime token</text>',
        f'<path d="M{x0 + 160},{m - 3} h8 l-4,7 z" fill="white" stroke="{RUNTIME}"/>'
        f'<text x="{x0 + 172}" y="{t}">below the oracle top-k</text>',
        f'<rect x="{x0 + 290}" y="{m - 4}" width="8" height="8" fill="{NEAR_TIE}" '
        f'stroke="#ccc"/><text x="{x0 + 302}" y="{t}">near tie</text>',
        f'<line x1="{x0 + 350}" x2="{x0 + 350}" y1="{m - 5}" y2="{m + 5}" stroke="{DIVERGENCE}" '
        f'stroke-dasharray="4 2"/><text x="{x0 + 355}" y="{t}">first divergence</text>',
    ]
    return '<g class="legend">' + "".join(items) + "</g>"
