"""What every figure shares: log axes with readable ticks, hover text that names a run, the
colours of sizes and budgets, and annotation labels placed so that none overlaps another.

Plotly's own log ticks mix SI suffixes and powers on one axis ("1T", "100T", "10^16"); here
ticks are set explicitly from the data's range: counts (N, D) as 10K, 1M, 1B, 1T and FLOPs as
1e18, with 2 and 5 between decades when an axis spans fewer than three.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from scaling.base.config import format_count

WIDTH, HEIGHT = 980, 560        # fixed, so that label placement knows the plot's pixels
MARGIN = dict(l=80, r=30, t=70, b=70)
FONT_PX = 12                    # annotation font size; ~0.6 em a character for the placer


def go():
    """plotly.graph_objects, imported when the first figure is drawn: a command that draws none
    (`scaling fit` without --plots) never loads plotly."""
    import plotly.graph_objects as go_
    return go_


def flops_label(c: float) -> str:
    """1e18 -> '1e18', 3.2e21 -> '3.2e21' (FLOPs read as powers of ten)."""
    mant, exp = f"{c:.2g}".split("e") if "e" in f"{c:.2g}" else (f"{c:.2g}", "0")
    return f"{mant}e{int(exp)}"


def count_label(n: float) -> str:
    return format_count(n)


FORMATS = {"count": count_label, "flops": flops_label}


def log_ticks(lo: float, hi: float, kind: str) -> tuple[list[float], list[str]]:
    """Tick values and labels for a log axis from lo to hi: every decade (every other one, or
    sparser, past 8 decades, so that labels stay level and apart), plus 2 and 5 within each
    when the axis spans fewer than three. Counts past 1e15 (no suffix beyond T) are written
    as powers on the whole axis, so that one axis never mixes styles."""
    fmt = FORMATS["flops" if kind == "flops" or hi >= 1e15 else "count"]
    span = math.log10(hi) - math.log10(lo)
    steps = (1, 2, 5) if span < 3 else (1,)
    stride = max(1, math.ceil(span / 8))
    vals = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        if e % stride:
            continue
        vals += [m * 10.0 ** e for m in steps if lo <= m * 10.0 ** e <= hi]
    if len(vals) < 2:   # under a decade: the ends, rounded
        vals = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    return vals, [fmt(v) for v in vals]


def positive(values: Iterable) -> np.ndarray:
    a = np.asarray([v for v in values if v is not None], float).ravel()
    return a[np.isfinite(a) & (a > 0)]


def set_log_axis(fig, axis: str, values, kind: str, title: str, pad: float = 0.08, **where) -> tuple[float, float]:
    """Make `axis` ('x' or 'y') a log axis over the range of `values` (padded by `pad` of its
    span in decades) with readable ticks; `where` picks a subplot (row=, col=). Returns the range."""
    v = positive(values)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (1.0, 10.0)
    if hi <= lo * 1.0001:
        lo, hi = lo / 2, hi * 2
    llo, lhi = math.log10(lo), math.log10(hi)
    p = max(pad * (lhi - llo), 0.05)
    llo, lhi = llo - p, lhi + p
    vals, text = log_ticks(10 ** llo, 10 ** lhi, kind)
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    update(type="log", range=[llo, lhi], tickvals=vals, ticktext=text, title=title, **where)
    return 10 ** llo, 10 ** lhi


def style(fig, title: str, height: int = HEIGHT, legend_below: bool = False):
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), template="plotly_white",
                      width=WIDTH, height=height, margin=MARGIN,
                      hoverlabel=dict(align="left"),
                      legend=dict(orientation="h", yanchor="top", y=-0.16, x=0) if legend_below else None)
    return fig


def size_colour(n: float, n_lo: float, n_hi: float) -> str:
    """A run's colour by its size, on Viridis by log N (small: purple, large: yellow)."""
    from plotly.colors import sample_colorscale   # here, not above: plotly loads with the first figure (go)
    t = 0.5 if n_hi <= n_lo else (math.log(n) - math.log(n_lo)) / (math.log(n_hi) - math.log(n_lo))
    return sample_colorscale("Viridis", [min(max(t, 0.0), 1.0) * 0.92])[0]


def budget_colours(k: int) -> list[str]:
    from plotly.colors import sample_colorscale   # here, not above: plotly loads with the first figure (go)
    return sample_colorscale("Plasma", list(np.linspace(0.0, 0.85, max(k, 1))))


def run_hover(run, n, d, c, loss, extra: str = "") -> str:
    """One run, as the hover box names it: name, N, D, C, loss."""
    return (f"<b>{run}</b><br>N {count_label(n)}<br>D {count_label(d)}<br>C {flops_label(c)} FLOPs"
            f"<br>loss {loss:.4f}{extra}")


def place_labels(fig, points: list[tuple[float, float, str]], x_range, y_range, log: tuple[bool, bool] = (True, True),
                 plot_box: tuple[int, int] | None = None, **kw) -> None:
    """Annotation labels for points (x, y, text) in data units, each put at the first of a
    ring of offsets where its box overlaps neither a box already placed nor a labelled point.

    Works in pixels of the plot area: the figure's size is fixed (WIDTH, HEIGHT less the
    margins, or `plot_box`), the axis ranges are given, and a label's box is estimated from its
    length (0.6 em a character, 1.3 em high, plus padding). The browser test measures the real
    boxes."""
    w_px, h_px = plot_box or (WIDTH - MARGIN["l"] - MARGIN["r"], HEIGHT - MARGIN["t"] - MARGIN["b"])

    def to_px(x, y):
        fx = [math.log10(x), *map(math.log10, x_range)] if log[0] else [x, *x_range]
        fy = [math.log10(y), *map(math.log10, y_range)] if log[1] else [y, *y_range]
        return ((fx[0] - fx[1]) / (fx[2] - fx[1]) * w_px, (fy[0] - fy[1]) / (fy[2] - fy[1]) * h_px)

    placed: list[tuple[float, float, float, float]] = []
    pts = [to_px(x, y) for x, y, _ in points]
    marks = [(px - 7, py - 7, px + 7, py + 7) for px, py in pts]
    rings = [(0, 28), (0, -28), (40, 18), (-40, 18), (40, -18), (-40, -18), (0, 52), (0, -52),
             (75, 0), (-75, 0), (70, 42), (-70, 42), (70, -42), (-70, -42), (0, 80), (0, -80),
             (110, 25), (-110, 25), (110, -25), (-110, -25)]

    def clash(b):
        return any(not (b[2] <= o[0] or o[2] <= b[0] or b[3] <= o[1] or o[3] <= b[1]) for o in placed + marks)

    for (x, y, text), (px, py) in zip(points, pts):
        w, h = 0.6 * FONT_PX * len(text) + 10, 1.3 * FONT_PX + 8
        best = None
        for dx, dy in rings:
            cx, cy = px + dx, py + dy          # label centre, y up (plot pixels)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            inside = box[0] >= 0 and box[2] <= w_px and box[1] >= 0 and box[3] <= h_px
            if inside and not clash(box):
                best = (dx, dy, box)
                break
        if best is None:   # nowhere free: the farthest offset, still inside the plot if it can be
            dx, dy = rings[-1]
            best = (dx, dy, (px + dx - w / 2, py + dy - h / 2, px + dx + w / 2, py + dy + h / 2))
        dx, dy, box = best
        placed.append(box)
        fig.add_annotation(x=math.log10(x) if log[0] else x, y=math.log10(y) if log[1] else y, text=text,
                           ax=dx, ay=-dy, showarrow=True, arrowhead=0, arrowwidth=1, arrowcolor="#555",
                           bgcolor="rgba(255,255,255,0.85)", bordercolor="#888", borderwidth=1, borderpad=3,
                           font=dict(size=FONT_PX), **kw)
