"""The two-step task law's figure (docs/task-laws.md): step 1, the task loss against tokens D of
every run with the law's curve for each size; step 2, accuracy against the task loss over the
validation points with the sigmoid and its 95% bootstrap band. Drawn from the fit record alone
(`record["task"]`, which keeps the points it was fitted on, thinned)."""

from __future__ import annotations

import numpy as np

from scaling.base.intervals import percentile_band
from scaling.figures.axes import go, set_log_axis, size_colour, style
from scaling.fit.law import predict_loss
from scaling.fit.tasklaw import sigmoid


def _step1(fig, g, t: dict) -> None:
    s1 = t["step1"]
    pts = s1["points"]
    n, d, loss = (np.asarray(pts[k], float) for k in ("params", "tokens", "loss"))
    lo, hi = float(n.min()), float(n.max())
    grid = np.geomspace(d.min() / 1.5, d.max() * 1.5, 80)
    for size in np.unique(n):
        colour = size_colour(size, lo, hi)
        fig.add_trace(g.Scatter(x=grid, y=predict_loss(s1, size, grid), mode="lines", showlegend=False,
                                line=dict(color=colour, dash="dash"), hoverinfo="skip"), row=1, col=1)
        i = np.flatnonzero(n == size)
        fig.add_trace(g.Scatter(x=d[i], y=loss[i], mode="markers", name=f"N = {size:.3g}",
                                marker=dict(color=colour, size=9, line=dict(color="black", width=0.5)),
                                text=[pts["run"][k] for k in i],
                                hovertemplate="%{text}<br>D %{x:.3g}<br>task loss %{y:.4f}<extra></extra>"),
                      row=1, col=1)
    set_log_axis(fig, "x", grid, "count", "training tokens D", row=1, col=1)
    fig.update_yaxes(title=f"task loss ({t['target']})", row=1, col=1)


def _step2(fig, g, t: dict) -> None:
    s2 = t["step2"]
    pts = s2["points"]
    x, y = np.asarray(pts["loss"], float), np.asarray(pts["acc"], float)
    fig.add_trace(g.Scatter(x=x, y=y, mode="markers", name="validation points", marker=dict(color="gray", size=4,
                            opacity=0.5), text=pts["run"],
                            hovertemplate="%{text}<br>task loss %{x:.4f}<br>accuracy %{y:.3f}<extra></extra>"),
                  row=1, col=2)
    grid = np.linspace(max(0.0, x.min() - 0.2 * np.ptp(x)), x.max() + 0.1 * np.ptp(x), 120)
    samples = np.asarray((t.get("bootstrap") or {}).get("step2") or [], float).reshape(-1, 4)
    if len(samples) >= 2:
        lo, hi = percentile_band(sigmoid(samples, grid[None, :]))
        fig.add_trace(g.Scatter(x=np.r_[grid, grid[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", mode="lines",
                                line=dict(width=0), fillcolor="rgba(31,119,180,0.2)", name="95% band",
                                hoverinfo="skip"), row=1, col=2)
    fig.add_trace(g.Scatter(x=grid, y=sigmoid(s2, grid), mode="lines", line=dict(color="rgb(31,119,180)", width=2),
                            name=f"sigmoid: floor {s2['floor']:.2f}, ceiling {s2['ceiling']:.2f}"), row=1, col=2)
    fig.update_xaxes(title=f"task loss ({t['target']})", row=1, col=2)
    fig.update_yaxes(title=f"accuracy ({t['accuracy']})", row=1, col=2)


def task_steps(fit: dict):
    """Both steps of the fit's task law side by side; None for a fit without one. Where step 2
    was refused (a task at chance), its panel says why instead of a curve."""
    from plotly.subplots import make_subplots   # here, not above: plotly loads with the first figure drawn (axes.go)
    t = fit.get("task")
    if not t:
        return None
    g = go()
    refused = (t.get("step2") or {}).get("refused")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("step 1: task loss L(N, D)",
                                        "step 2: accuracy against task loss" + (" (not fitted)" if refused else "")))
    _step1(fig, g, t)
    if refused:
        fig.add_annotation(text=refused[:120] + ("..." if len(refused) > 120 else ""), showarrow=False,
                           xref="x2 domain", yref="y2 domain", x=0.5, y=0.5)
    else:
        _step2(fig, g, t)
    style(fig, f"Task {t['name']}: the two-step law (Bhagia et al. 2024)", legend_below=True)
    return fig
