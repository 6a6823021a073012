"""The figure of recipes compared (`scaling compare --plots`, the report's comparison section):
left, each recipe's compute-optimal frontier L*(C) on the yardstick with its 95% band and its
runs; right, the compute-equivalence multiplier k(C) of each recipe against the reference, with
its band, and the line k = 1 (no difference). Drawn from the comparison's record alone
(scaling/fit/compare.py), plus the runs' points where given."""

from __future__ import annotations

import numpy as np

from scaling.figures.axes import flops_label, go, set_log_axis, style

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _band(fig, x, lo, hi, colour: str, name: str, col: int) -> None:
    g = go()
    fig.add_trace(g.Scatter(x=np.r_[x, x[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", fillcolor=colour,
                            line=dict(width=0), opacity=0.18, name=f"{name}: 95% band", legendgroup=name,
                            showlegend=False, hoverinfo="skip"), row=1, col=col)


def _rows(record: dict, name: str) -> dict:
    rows = sorted((r for r in record["rows"] if r["recipe"] == name), key=lambda r: r["compute"])
    return {k: np.array([np.nan if r.get(k) is None else r[k] for r in rows], float)
            for k in ("compute", "loss", "loss_lower", "loss_upper", "k", "k_lower", "k_upper")} | {
        "in_range": np.array([r["in_range"] for r in rows], bool)}


def _line(fig, x, y, inside, colour: str, name: str, col: int, hover: str) -> None:
    """A solid line over the runs' range, dashed beyond it on either side (an extrapolation)."""
    g = go()
    idx = np.flatnonzero(inside)
    first, last = (idx[0], idx[-1]) if len(idx) else (len(x), len(x))
    parts = [(slice(first, last + 1), "solid"), (slice(0, first + 1), "dash"), (slice(last, len(x)), "dash")]
    for k, (part, dash) in enumerate(parts):
        if len(x[part]) < 2:
            continue
        fig.add_trace(g.Scatter(x=x[part], y=y[part], mode="lines", name=name, legendgroup=name,
                                showlegend=k == 0 and col == 1, line=dict(color=colour, width=2.5, dash=dash),
                                hovertemplate=hover), row=1, col=col)


def comparison(record: dict, runs: dict | None = None):
    """The comparison's figure: frontiers (left) and k(C) (right). runs: {recipe: (flops, metric)}
    arrays of each recipe's runs, drawn as points under its frontier."""
    from plotly.subplots import make_subplots   # here, not above: plotly loads with the first figure drawn (axes.go)
    g = go()
    ref, metric = record["reference"], record["metric"]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=(f"compute-optimal {metric} against training compute",
                                        f"compute multiplier k(C) against {ref}"))
    xs = []
    for i, rec in enumerate(record["recipes"]):
        name, colour = rec["name"], PALETTE[i % len(PALETTE)]
        r = _rows(record, name)
        c = r["compute"]
        xs += list(c)
        if runs and name in runs:
            fx, fy = (np.asarray(v, float) for v in runs[name])
            fig.add_trace(g.Scatter(x=fx, y=fy, mode="markers", name=f"{name}: runs", legendgroup=name,
                                    showlegend=False, marker=dict(color=colour, size=5, opacity=0.45),
                                    hovertemplate=f"{name} run: C %{{x:.3g}}, {metric} %{{y:.4f}}<extra></extra>"),
                          row=1, col=1)
        _band(fig, c, r["loss_lower"], r["loss_upper"], colour, name, 1)
        _line(fig, c, r["loss"], r["in_range"], colour, name, 1,
              f"{name}: C %{{x:.3g}}, L* %{{y:.4f}}<extra></extra>")
        if name == ref:
            continue
        _band(fig, c, r["k_lower"], r["k_upper"], colour, name, 2)
        _line(fig, c, r["k"], r["in_range"], colour, name, 2, f"{name}: C %{{x:.3g}}, k %{{y:.3g}}<extra></extra>")
    c_all = np.array(xs)
    fig.add_trace(g.Scatter(x=[c_all.min(), c_all.max()], y=[1, 1], mode="lines", name="k = 1: no difference",
                            line=dict(color="#555", dash="dot", width=1), hoverinfo="skip"), row=1, col=2)
    for col in (1, 2):
        set_log_axis(fig, "x", xs, "flops", "training compute C (FLOPs)", row=1, col=col)
    fig.update_yaxes(title=f"{metric} at the optimum", row=1, col=1)
    # k spans fractions and multiples: plotly's own log ticks (0.5, 1, 2, ...), not counts' labels.
    fig.update_yaxes(type="log", title=f"k: compute needed / {ref}'s", row=1, col=2)
    plan = record.get("plan_compute")
    title = (f"Recipes compared on {metric}, against {ref}<br><sup>95% bootstrap bands; dashed: beyond the runs"
             f"{', to the plan at ' + flops_label(plan) if plan else ''}</sup>")
    fig = style(fig, title, legend_below=True)
    fig.update_layout(margin=dict(t=100))          # room for the title's second line above the panels
    return fig
