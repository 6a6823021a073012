"""Plotly figures of fits and plans, written as one self-contained HTML page per report.

The page embeds plotly.js once (no network needed to view it, no kaleido needed to write it).
Figures: the compute-optimal frontier of each approach, the IsoFLOP parabolas, the N-D
plane with iso-loss contours (and famous plans on it), and total cost against N.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaling.rundir import atomic_write_bytes


def _go():
    import plotly.graph_objects as go
    return go


def write_page(figs: list, path: Path, title: str) -> Path:
    """All figures in one HTML file, plotly.js inlined once."""
    parts = [f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>",
             f"<h2 style='font-family:sans-serif'>{title}</h2>"]
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    atomic_write_bytes(Path(path), "\n".join(parts).encode())
    return Path(path)


def _log_axes(fig, x: str, y: str):
    fig.update_xaxes(type="log", title=x)
    fig.update_yaxes(type="log", title=y)
    fig.update_layout(template="plotly_white", height=520)
    return fig


def _fpt(a3: dict | None) -> tuple:
    """FLOPs per token (k, e) the fit's derived quantities used (6N when not recorded)."""
    fc = (a3 or {}).get("flop_count") or {}
    return (float(fc.get("k", 6.0)), float(fc.get("e", 1.0)))


def frontier_figure(fit: dict, runs: dict | None = None):
    """N_opt(C) of each approach fitted, with the runs' (C, N) behind them."""
    go = _go()
    fig = go.Figure()
    cs = []
    if runs is not None:
        fig.add_trace(go.Scatter(x=runs["flops"], y=runs["params"], mode="markers", name="runs",
                                 marker=dict(color="lightgray", size=6)))
        cs = list(runs["flops"])
    a3 = fit.get("approach3")
    lo = min(cs) if cs else 1e18
    hi = max(max(cs) if cs else 1e22, 1e24) * 10
    c = np.geomspace(lo, hi, 100)
    for k in (1, 2):
        ak = fit.get(f"approach{k}")
        if ak:
            fig.add_trace(go.Scatter(x=c, y=ak["k_N"] * c ** ak["a"], mode="lines",
                                     name=f"approach {k}: N_opt ∝ C^{ak['a']:.3f}"))
    fpt = _fpt(a3)
    if a3:
        from scaling.fit.law import optimal_nd
        n, _ = optimal_nd(a3, c, fpt)
        fig.add_trace(go.Scatter(x=c, y=n, mode="lines", name=f"approach 3: N_opt ∝ C^{a3['a']:.3f}"))
        samples = (a3.get("bootstrap") or {}).get("samples")
        if samples:
            ps = [dict(zip(("E", "A", "B", "alpha", "beta"), s)) for s in samples]
            ns = np.array([optimal_nd(p, c, fpt)[0] for p in ps])
            lo_b, hi_b = np.nanpercentile(ns, [2.5, 97.5], axis=0)
            fig.add_trace(go.Scatter(x=np.r_[c, c[::-1]], y=np.r_[hi_b, lo_b[::-1]], fill="toself",
                                     line=dict(width=0), opacity=0.2, name="approach 3: 95% interval"))
    fig.update_layout(title="Compute-optimal model size (approach 3: C = D x "
                            + ("6N)" if fpt == (6.0, 1.0) else f"{fpt[0]:.3g} N^{fpt[1]:.3f}, the runs' FLOP count)"))
    return _log_axes(fig, "training FLOPs C", "parameters N")


def isoflop_figure(fit: dict):
    """Loss against N per FLOP budget, with each budget's parabola and its vertex."""
    go = _go()
    a2 = fit.get("approach2")
    if not a2:
        return None
    fig = go.Figure()
    for b in a2["budgets"]:
        n = np.asarray(b["points"]["N"])
        if len(n) < 3:
            continue
        name = f"{b['flops']:.2g} FLOPs"
        fig.add_trace(go.Scatter(x=n, y=b["points"]["loss"], mode="markers", name=name, legendgroup=name))
        if b["parabola_logN"] is not None:
            # Drawn over the sizes it was fitted on (the 5 around the minimum, by default).
            lo, hi = b.get("parabola_N_range") or (n.min(), n.max())
            xs = np.geomspace(lo, hi, 60)
            fig.add_trace(go.Scatter(x=xs, y=np.polyval(b["parabola_logN"], np.log(xs)), mode="lines",
                                     legendgroup=name, showlegend=False,
                                     line=dict(dash="solid" if b["refused"] is None else "dot")))
        if b["N_opt"]:
            fig.add_trace(go.Scatter(x=[b["N_opt"]], y=[b["loss_opt"]], mode="markers", legendgroup=name,
                                     showlegend=False, marker=dict(symbol="x", size=11, color="black")))
    fig.update_layout(title="IsoFLOP profiles (dotted: refused, no minimum inside the sampled sizes)",
                      template="plotly_white", height=520)
    fig.update_xaxes(type="log", title="parameters N")
    fig.update_yaxes(title="loss")
    return fig


def _iso_line(fig, go, law: dict, ln, d_hi: float, level: float, line: dict, label: str, legend: bool):
    """The curve L(N, D) = level: D = (B / (level - E - A/N^alpha))^(1/beta) where it exists."""
    with np.errstate(over="ignore", divide="ignore"):
        gap = level - law["E"] - law["A"] / (10 ** ln) ** law["alpha"]
    ok = gap > 0
    ld = np.log10(law["B"] / gap[ok]) / law["beta"]
    x, y = ln[ok][ld <= np.log10(d_hi)], ld[ld <= np.log10(d_hi)]
    if len(x) < 2:
        return
    text = [""] * (len(x) - 1) + [label]
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines" if legend else "lines+text", line=line, name=label,
                             text=None if legend else text, textposition="top left", showlegend=legend,
                             textfont=dict(color="white"), hoverinfo="name"))


def nd_plane_figure(law: dict, runs: dict | None = None, plans: list | None = None,
                    n_range=None, d_range=None, frontier=None, iso_loss: float | None = None,
                    frontier_label: str | None = None):
    """The N-D plane: iso-loss contours of the law, its efficient frontier (6ND's closed form,
    or `frontier` = (N, D) arrays under another FLOP count), the iso-loss curve of a target
    loss, runs and plans."""
    go = _go()
    from scaling.fit.law import optimal_nd, predict_loss
    pts_n = list(runs["params"]) if runs else []
    pts_d = list(runs["tokens"]) if runs else []
    for p in plans or []:
        pts_n.append(p["params"])
        pts_d.append(p["tokens"])
    n_lo, n_hi = n_range or (min(pts_n + [1e7]) / 3, max(pts_n + [1e12]) * 3)
    d_lo, d_hi = d_range or (min(pts_d + [1e8]) / 3, max(pts_d + [1e13]) * 3)
    ln = np.linspace(np.log10(n_lo), np.log10(n_hi), 120)
    ld = np.linspace(np.log10(d_lo), np.log10(d_hi), 120)
    loss = predict_loss(law, 10 ** ln[None, :], 10 ** ld[:, None])
    fig = go.Figure()
    # Colour by log10(L - E) (losses crowd near E), labelled lines at round losses.
    fig.add_trace(go.Contour(x=ln, y=ld, z=np.log10(loss - law["E"]), colorscale="Viridis",
                             contours=dict(showlines=False), colorbar=dict(title="log10(L - E)"),
                             name="loss", opacity=0.75, customdata=loss,
                             hovertemplate="N 10^%{x:.2f}, D 10^%{y:.2f}: loss %{customdata:.4f}<extra></extra>"))
    # Labelled iso-loss lines, drawn from D(N) at the law (exact), at losses evenly spaced
    # in log(L - E) across the window, rounded to 3 decimals.
    gaps = np.log10(loss - law["E"])
    levels = law["E"] + 10 ** np.linspace(np.quantile(gaps, 0.05), np.quantile(gaps, 0.9), 7)
    for lv in np.unique(np.round(levels, 3)):
        _iso_line(fig, go, law, ln, d_hi, lv, dict(color="white", width=1), f"{lv:.3f}", legend=False)
    if frontier is None:
        k, e = _fpt(law)
        c = np.geomspace(k * n_lo ** e * d_lo, k * n_hi ** e * d_hi, 200)
        fn, fd = optimal_nd(law, c, (k, e))
        frontier_label = frontier_label or ("efficient frontier (C = 6ND)" if (k, e) == (6.0, 1.0) else
                                            f"efficient frontier (C = D x {k:.3g} N^{e:.3f}, the runs' count)")
    else:
        fn, fd = (np.asarray(v, float) for v in frontier)
    keep = (fn >= n_lo) & (fn <= n_hi) & (fd >= d_lo) & (fd <= d_hi)
    fig.add_trace(go.Scatter(x=np.log10(fn[keep]), y=np.log10(fd[keep]), mode="lines",
                             line=dict(color="red", width=3), name=frontier_label))
    if iso_loss is not None and iso_loss > law["E"]:
        _iso_line(fig, go, law, ln, d_hi, iso_loss, dict(color="black", width=2, dash="dash"),
                  f"loss {iso_loss:.4f}", legend=True)
    if runs:
        fig.add_trace(go.Scatter(x=np.log10(runs["params"]), y=np.log10(runs["tokens"]), mode="markers",
                                 marker=dict(color="white", line=dict(color="black", width=1), size=6),
                                 name="runs"))
    for p in plans or []:
        fig.add_trace(go.Scatter(x=[np.log10(p["params"])], y=[np.log10(p["tokens"])], mode="markers+text",
                                 text=[p["name"]], textposition="top center",
                                 marker=dict(symbol="star", size=14, color="orange",
                                             line=dict(color="black", width=1)), name=p["name"]))
    fig.update_layout(title="N–D plane: iso-loss contours and the compute-optimal frontier",
                      template="plotly_white", height=650,
                      # below the plot: on the right the legend would sit on the colour bar
                      legend=dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0))
    fig.update_xaxes(title="log10 parameters N", range=[ln[0], ln[-1]])
    fig.update_yaxes(title="log10 tokens D", range=[ld[0], ld[-1]])
    return fig


def cost_figure(curve: dict):
    """Training, inference and total compute against N at a fixed loss: the minimum, the
    Chinchilla-optimal N (least training compute) and the plan's N marked."""
    go = _go()
    fig = go.Figure()
    n = np.asarray(curve["params"])
    for key, name, dash in (("train", "training", "dot"), ("inference", "inference", "dash"),
                            ("total", "training + inference", "solid")):
        fig.add_trace(go.Scatter(x=n, y=curve[key], mode="lines", name=name, line=dict(dash=dash),
                                 customdata=curve["tokens"],
                                 hovertemplate="N %{x:.3s}, D %{customdata:.3s}: %{y:.3g} FLOPs<extra></extra>"))
    total = np.asarray(curve["total"])
    marks = [("least compute", curve.get("optimal_params"), "x", "black"),
             ("Chinchilla-optimal", curve.get("chinchilla_params"), "diamond", "red"),
             ("the plan", curve.get("plan_params"), "star", "orange")]
    for name, x, symbol, color in marks:
        if x is None:
            continue
        y = float(np.exp(np.interp(np.log(x), np.log(n), np.log(total))))
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=f"{name}: N {x:.3g}",
                                 marker=dict(symbol=symbol, size=13, color=color, line=dict(color="black", width=1))))
        fig.add_vline(x=x, line=dict(color=color, width=1, dash="dot"))
    fig.update_layout(title=f"Compute to reach loss {curve['loss']:.4g} and serve "
                            f"{curve['inference_tokens']:.3g} tokens")
    return _log_axes(fig, "parameters N", "FLOPs")


def fit_figures(fit: dict, runs: dict | None) -> list:
    figs = [frontier_figure(fit, runs)]
    if fit.get("approach2"):
        figs.append(isoflop_figure(fit))
    if fit.get("approach3"):
        figs.append(nd_plane_figure(fit["approach3"], runs))
    return figs
