"""Figures of fitted laws and of plans: N_opt(C) and D_opt(C) of the three approaches with
bootstrap bands beside the published laws, Approach 3's L(N, D) on the N-D plane
(Chinchilla's Figure 4), famous models on a law's frontier, and the training + serving cost
of reaching a loss against N."""

from __future__ import annotations

import numpy as np

from scaling.base.flops import SIX_ND, FlopCount
from scaling.base.intervals import percentile_band
from scaling.figures.axes import (WIDTH, count_label, flops_label, go, place_labels, run_hover,
                                  set_log_axis, style)
from scaling.fit.compute import count_of, optimal
from scaling.fit.isoflop import group_budgets
from scaling.fit.law import predict_loss
from scaling.plan.training import efficient_frontier

# Published laws drawn for reference (both count C = 6ND).
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}   # Hoffmann et al. 2022, eq. 10
PF_DAY = 1e15 * 86400                                                          # FLOPs in a petaflop/s-day
KAPLAN = (1.3e9, 0.73)   # Kaplan et al. 2020: N_opt = 1.3e9 (C / PF-day)^0.73, non-embedding N


def count_label_of(count: FlopCount) -> str:
    """The count in a figure's words: 6ND, C = D x k N^e, or the encoder-decoder formula."""
    if count.kind == "6nd":
        return "6ND"
    if count.kind == "power":
        return f"C = D x {count.k:.3g} N^{count.e:.3f}"
    return (f"encoder-decoder FLOPs by shape, vocab {count.vocab_size}, seq_len {count.seq_len}"
            + (", N non-embedding" if count.nonembed else ""))


def _band(ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return percentile_band(ys, axis=0)


def _power_band(rec: dict, c: np.ndarray):
    """95% band of N_opt and D_opt from an approach's bootstrap refits (a, k_N, b, k_D each)."""
    s = np.asarray((rec.get("bootstrap") or {}).get("samples") or [], float)
    if s.ndim != 2 or len(s) < 20:
        return None
    n = s[:, 1:2] * c[None, :] ** s[:, 0:1]
    d = s[:, 3:4] * c[None, :] ** s[:, 2:3]
    return _band(n), _band(d)


def _add_band(fig, g, c, band, colour, name, col):
    lo, hi = band
    fig.add_trace(g.Scatter(x=np.r_[c, c[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", fillcolor=colour,
                            line=dict(width=0), opacity=0.18, name=name, legendgroup=name, showlegend=col == 1,
                            hoverinfo="skip"), row=1, col=col)


COLOURS = {1: "#1f77b4", 2: "#2ca02c", 3: "#d62728"}


def _compute_grid(fit: dict, table, plan: dict | None) -> np.ndarray:
    """Training compute from half the smallest run's to three times the largest (or the plan's)."""
    cs = [] if table is None else list(table.col("flops"))
    cs += list((fit.get("range") or {}).get("flops") or [])
    c_plan = (plan or {}).get("compute")
    lo = min(cs) if cs else 1e18
    hi = max(cs + ([c_plan] if c_plan else [])) if cs or c_plan else 1e24
    return np.geomspace(lo / 2, hi * 3, 160)


def _frontier_runs(fig, g, table, ys: dict) -> None:
    """Every run, grey, at its N (left) and D (right)."""
    r_n, r_d, r_c = table.col("params"), table.col("tokens"), table.col("flops")
    runs = [str(x) for x in table.df["run"].to_list()]
    text = [run_hover(x, n, d, cc, ll) for x, n, d, cc, ll in zip(runs, r_n, r_d, r_c, table.col("loss"))]
    for k, y in ((1, r_n), (2, r_d)):
        fig.add_trace(g.Scatter(x=r_c, y=y, mode="markers", name="runs", legendgroup="runs", showlegend=k == 1,
                                marker=dict(color="lightgray", size=6), text=text,
                                hovertemplate="%{text}<extra></extra>"), row=1, col=k)
        ys[k] += list(y)


def _read_off_points(fig, g, a1: dict | None, a2: dict | None) -> None:
    """The points approaches 1 (the envelope) and 2 (each budget's minimum) read off the runs."""
    if a1:
        env = a1["envelope"]
        step = max(1, len(env["flops"]) // 60)
        txt = [f"approach 1 envelope at C {flops_label(cc)}: N {count_label(n)}, D {count_label(d)}"
               for cc, n, d in zip(env["flops"][::step], env["N"][::step], env["D"][::step])]
        for k, key in ((1, "N"), (2, "D")):
            fig.add_trace(g.Scatter(x=env["flops"][::step], y=env[key][::step], mode="markers",
                                    name="approach 1: envelope points", legendgroup="p1", showlegend=k == 1,
                                    marker=dict(color=COLOURS[1], size=5, symbol="circle-open"), text=txt,
                                    hovertemplate="%{text}<extra></extra>"), row=1, col=k)
    if a2:
        ok = [b for b in a2["budgets"] if b["N_opt"]]
        txt = [f"approach 2 minimum at C {flops_label(b['flops'])}: N_opt {count_label(b['N_opt'])}, "
               f"D_opt {count_label(b['D_opt'])}, loss {b['loss_opt']:.4f}" for b in ok]
        for k, key in ((1, "N_opt"), (2, "D_opt")):
            fig.add_trace(g.Scatter(x=[b["flops"] for b in ok], y=[b[key] for b in ok], mode="markers",
                                    name="approach 2: IsoFLOP minima", legendgroup="p2", showlegend=k == 1,
                                    marker=dict(color=COLOURS[2], size=11, symbol="x"), text=txt,
                                    hovertemplate="%{text}<extra></extra>"), row=1, col=k)


def _power_laws(fig, g, c: np.ndarray, a1: dict | None, a2: dict | None, ys: dict) -> None:
    """N_opt = k_N C^a and D_opt = k_D C^b of approaches 1 and 2, each with its 95% band."""
    for k, rec in ((1, a1), (2, a2)):
        if not rec:
            continue
        name = f"approach {k}: N ∝ C^{rec['a']:.3f}, D ∝ C^{rec['b']:.3f}"
        band = _power_band(rec, c)
        for col, coef, ex in ((1, rec["k_N"], rec["a"]), (2, rec["k_D"], rec["b"])):
            y = coef * c ** ex
            ys[col] += list(y)
            fig.add_trace(g.Scatter(x=c, y=y, mode="lines", name=name, legendgroup=name, showlegend=col == 1,
                                    line=dict(color=COLOURS[k]), hovertemplate=f"approach {k}: C %{{x:.3g}}, "
                                    "%{y:.3s}<extra></extra>"), row=1, col=col)
            if band:
                _add_band(fig, g, c, band[col - 1], COLOURS[k], f"approach {k}: 95% band", col)


def _approach3_frontier(fig, g, c: np.ndarray, a3: dict, count: FlopCount, ys: dict) -> None:
    """Approach 3's N_opt(C) and D_opt(C) under the fit's FLOP count (exact at every C drawn),
    with the band of its bootstrap."""
    n3, d3, _ = optimal(a3, c, count)
    at = "" if count.is_power else f" at {flops_label(a3.get('c_ref', c[-1]))}"
    name = f"approach 3: N ∝ C^{a3['a']:.3f}, D ∝ C^{a3['b']:.3f}{at}"
    for col, y in ((1, n3), (2, d3)):
        ys[col] += list(y)
        fig.add_trace(g.Scatter(x=c, y=y, mode="lines", name=name, legendgroup=name, showlegend=col == 1,
                                line=dict(color=COLOURS[3], width=2.5), hovertemplate="approach 3: C %{x:.3g}, "
                                "%{y:.3s}<extra></extra>"), row=1, col=col)
    samples = (a3.get("bootstrap") or {}).get("samples")
    if samples and len(samples) >= 20:
        ns, ds, _ = optimal(np.asarray(samples, float), c, count)
        for col, y in ((1, ns), (2, ds)):
            _add_band(fig, g, c, _band(y), COLOURS[3], "approach 3: 95% band", col)


def _published_laws(fig, g, c: np.ndarray) -> None:
    """Chinchilla's and Kaplan's laws, under their own count (C = 6ND), over the same compute."""
    nc, dc, _ = optimal(CHINCHILLA, c, SIX_ND)
    nk = KAPLAN[0] * (c / PF_DAY) ** KAPLAN[1]
    for name, n_, d_, dash in (("Chinchilla (Hoffmann et al. 2022, approach 3, 6ND)", nc, dc, "dash"),
                               ("Kaplan et al. 2020: N = 1.3e9 (C/PF-day)^0.73", nk, c / (6 * nk), "dot")):
        for col, y in ((1, n_), (2, d_)):
            fig.add_trace(g.Scatter(x=c, y=y, mode="lines", name=name, legendgroup=name, showlegend=col == 1,
                                    line=dict(color="gray", dash=dash), hovertemplate=name.split(":")[0].split(" (")[0]
                                    + ": C %{x:.3g}, %{y:.3s}<extra></extra>"), row=1, col=col)


def _plan_marks(fig, g, plan: dict, ys: dict) -> None:
    """The plan (star) and the compute-optimal model of its compute (diamond)."""
    p, o, c_plan = plan["plan"], plan["optimal"], plan.get("compute")
    for col, key in ((1, "params"), (2, "tokens")):
        fig.add_trace(g.Scatter(x=[c_plan], y=[p[key]], mode="markers", name="the plan", legendgroup="plan",
                                showlegend=col == 1, marker=dict(symbol="star", size=16, color="orange",
                                                                 line=dict(color="black", width=1)),
                                text=[f"the plan: N {count_label(p['params'])}, D {count_label(p['tokens'])}, "
                                      f"C {flops_label(c_plan)} FLOPs, loss {p['loss']:.4f}"],
                                hovertemplate="%{text}<extra></extra>"), row=1, col=col)
        fig.add_trace(g.Scatter(x=[c_plan], y=[o[key]], mode="markers", name="the plan's compute-optimal model",
                                legendgroup="opt", showlegend=col == 1,
                                marker=dict(symbol="diamond", size=11, color="white",
                                            line=dict(color="black", width=1.5)),
                                text=[f"compute-optimal at C {flops_label(c_plan)}: N {count_label(o['params'])}, "
                                      f"D {count_label(o['tokens'])}, loss {o['loss']:.4f}"],
                                hovertemplate="%{text}<extra></extra>"), row=1, col=col)
        ys[col] += [p[key], o[key]]


def frontier(fit: dict, table=None, plan: dict | None = None):
    """N_opt(C) (left) and D_opt(C) (right): the points Approaches 1 (envelope) and 2 (budget
    minima) read off the runs, the power laws of all three with their 95% bootstrap bands,
    extrapolated to the plan's compute, the plan itself, and Chinchilla's and Kaplan's
    published laws for reference."""
    from plotly.subplots import make_subplots   # here, not above: plotly loads with the first figure drawn (axes.go)
    g = go()
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("compute-optimal parameters N_opt", "compute-optimal tokens D_opt"))
    c = _compute_grid(fit, table, plan)
    ys: dict[int, list] = {1: [], 2: []}     # every y drawn, per column, for the axes' ranges
    if table is not None:
        _frontier_runs(fig, g, table, ys)
    a1, a2, a3 = (fit.get(f"approach{k}") for k in (1, 2, 3))
    _read_off_points(fig, g, a1, a2)
    _power_laws(fig, g, c, a1, a2, ys)
    count = count_of(fit)
    if a3:
        _approach3_frontier(fig, g, c, a3, count, ys)
    _published_laws(fig, g, c)
    if (plan or {}).get("plan"):
        _plan_marks(fig, g, plan, ys)
    # The count on a line of its own: it is long, and a title wider than the figure is cut.
    title = (f"Compute-optimal allocation against training compute<br><sup>approach 3 under the fit's count: "
             f"{count_label_of(count)}")
    if plan and plan.get("flop_model") and count.describe() != plan["flop_model"]:
        title += f"<br>the plan counts by {plan['flop_model']}"
    title += "</sup>"
    style(fig, title, height=660, legend_below=True)
    fig.update_layout(margin=dict(t=140))   # the title and the count's lines above the panels
    for col, name in ((1, "parameters N"), (2, "tokens D")):
        set_log_axis(fig, "x", c, "flops", "training compute C (FLOPs)", row=1, col=col)
        set_log_axis(fig, "y", ys[col], "count", name, row=1, col=col)
    return fig


# ----------------------------------------------------------------------------- the N-D plane

def _window(points_n, points_d, pad: float = 3.0):
    return (min(points_n) / pad, max(points_n) * pad), (min(points_d) / pad, max(points_d) * pad)


def _nd_contours(fig, g, law: dict, n_range, d_range, n_grid: int = 140) -> None:
    """L(N, D) over the window: filled by log10(L - E) (losses crowd near E), with labelled
    iso-loss lines at round losses; the colour bar reads in loss."""
    ns = np.geomspace(*n_range, n_grid)
    ds = np.geomspace(*d_range, n_grid)
    loss = predict_loss(law, ns[None, :], ds[:, None])
    gap = np.log10(np.maximum(loss - law["E"], 1e-12))
    levels = np.unique(np.round(law["E"] + 10 ** np.linspace(np.quantile(gap, 0.03), np.quantile(gap, 0.97), 6), 3))
    levels = levels[levels > law["E"]]   # rounding can bring the lowest to E itself: no log of 0
    bar_vals = np.log10(levels - law["E"])
    fig.add_trace(g.Contour(x=ns, y=ds, z=gap, colorscale="Viridis", contours=dict(showlines=False), ncontours=30,
                            colorbar=dict(title="loss", tickvals=list(bar_vals), ticktext=[f"{v:.3f}" for v in levels],
                                          len=0.75),
                            opacity=0.8, name="L(N, D)", customdata=loss, showlegend=False,
                            hovertemplate="N %{x:.3s}, D %{y:.3s}: loss %{customdata:.4f}<extra></extra>"))
    # Iso-loss lines labelled by plotly itself (its labels avoid one another).
    step = float(np.median(np.diff(levels))) if len(levels) > 1 else 0.1
    fig.add_trace(g.Contour(x=ns, y=ds, z=loss, contours=dict(coloring="none", showlabels=True,
                                                               start=float(levels[0]), end=float(levels[-1]),
                                                               size=step, labelfont=dict(color="white", size=11)),
                            line=dict(color="white", width=1), showscale=False, hoverinfo="skip",
                            name="iso-loss", showlegend=False))


def _isoflop_lines(fig, g, budgets, count: FlopCount, n_range, d_range):
    first = True
    for cb in budgets:
        ns = np.geomspace(*n_range, 40)
        ds = cb / count.per_token(ns)
        keep = (ds >= d_range[0]) & (ds <= d_range[1])
        if keep.sum() < 2:
            continue
        fig.add_trace(g.Scatter(x=ns[keep], y=ds[keep], mode="lines", name="IsoFLOP lines (the sweep's budgets)",
                                legendgroup="iso", showlegend=first, line=dict(color="black", width=1, dash="dot"),
                                hovertemplate=f"C = {flops_label(cb)} FLOPs<extra></extra>"))
        first = False


def contours(fit: dict, table=None):
    """Approach 3's L(N, D) on the N-D plane (Chinchilla's Figure 4): iso-loss contours, the
    efficient frontier under the runs' own FLOP count (C = D x k N^e), the IsoFLOP lines of
    the sweep's budgets, and the runs."""
    g = go()
    a3 = fit.get("approach3")
    if not a3:
        return None
    rng = fit.get("range") or {}
    pn = list(rng.get("params") or [1e7, 1e9])
    pd = list(rng.get("tokens") or [1e8, 1e10])
    n_range, d_range = _window(pn, pd, pad=4.0)
    fig = g.Figure()
    _nd_contours(fig, g, a3, n_range, d_range)
    count = count_of(fit)
    if table is not None:
        _, values = group_budgets(table.col("flops"), table.col("budget") if table.has("budget") else None)
        _isoflop_lines(fig, g, values if len(values) <= 12 else values[:: len(values) // 8], count, n_range, d_range)
    c = np.geomspace(float(count.per_token(n_range[0])) * d_range[0], float(count.per_token(n_range[1])) * d_range[1], 200)
    fn, fd, _ = optimal(a3, c, count)
    keep = (fn >= n_range[0]) & (fn <= n_range[1]) & (fd >= d_range[0]) & (fd <= d_range[1])
    fig.add_trace(g.Scatter(x=fn[keep], y=fd[keep], mode="lines", line=dict(color="red", width=3),
                            name=f"efficient frontier ({count_label_of(count)}, the fit's count)",
                            hovertemplate="frontier: N %{x:.3s}, D %{y:.3s}"
                            "<extra></extra>"))
    if table is not None:
        runs = [str(x) for x in table.df["run"].to_list()]
        n, d, cc, ll = (table.col(k) for k in ("params", "tokens", "flops", "loss"))
        fig.add_trace(g.Scatter(x=n, y=d, mode="markers", name="runs",
                                marker=dict(color="white", size=7, line=dict(color="black", width=1)),
                                text=[run_hover(*x) for x in zip(runs, n, d, cc, ll)],
                                hovertemplate="%{text}<extra></extra>"))
    deg = "; degenerate on these runs" if a3.get("degenerate") else ""
    style(fig, f"Approach 3: L(N, D) = {a3['E']:.3g} + {a3['A']:.3g}/N^{a3['alpha']:.3f} + "
               f"{a3['B']:.3g}/D^{a3['beta']:.3f}{deg}", height=640, legend_below=True)
    set_log_axis(fig, "x", n_range, "count", "parameters N", pad=0)
    set_log_axis(fig, "y", d_range, "count", "tokens D", pad=0)
    return fig


FAMOUS_MARGIN = dict(l=80, r=140, t=70, b=170)   # room for the colour bar and the legend below


def famous(compare: dict, law, flop, plan: dict | None = None):
    """Famous models (and the plan) on the N-D plane of a law (`scaling.plan.training.Law`): iso-loss
    contours and the efficient frontier under the plan's FLOP count, each model labelled, no
    two labels overlapping. `compare` is `scaling plan --compare`'s record."""
    g = go()
    pts = [(c["name"], c["params"], c["tokens"]) for c in compare["compare"]]
    extra = []
    if plan and "plan" in plan:
        if not any(name == "this plan" for name, _, _ in pts):   # --compare names the plan "this plan"
            extra.append(("the plan", plan["plan"]["params"], plan["plan"]["tokens"]))
        extra.append(("its compute-optimal model", plan["optimal"]["params"], plan["optimal"]["tokens"]))
    x = (plan or {}).get("inference")
    if x:
        extra.append(("least training + serving", x["optimal"]["params"], x["optimal"]["tokens"]))
    allp = pts + extra
    n_range, d_range = _window([p[1] for p in allp] + [1e9], [p[2] for p in allp] + [1e11], pad=4.0)
    fig = g.Figure()
    _nd_contours(fig, g, law.params, n_range, d_range)
    fn, fd = efficient_frontier(law, flop, n_range, d_range, n_points=240)
    fig.add_trace(g.Scatter(x=fn, y=fd, mode="lines", line=dict(color="red", width=3),
                            name=f"efficient frontier ({flop.describe().split(' (')[0].split(',')[0]})",
                            hovertemplate="frontier: N %{x:.3s}, D %{y:.3s}<extra></extra>"))
    rows = {c["name"]: c for c in compare["compare"]}
    hover = []
    for name, n, d in allp:
        c = rows.get(name)
        more = (f"<br>C {flops_label(c['flops'])} FLOPs, loss {c['loss']:.4f}<br>{c['tokens_per_param']:.1f} tokens/param, "
                f"{c['overtrained']:.2f}x the optimum's") if c else ""
        hover.append(f"<b>{name}</b><br>N {count_label(n)}, D {count_label(d)}{more}")
    fig.add_trace(g.Scatter(x=[p[1] for p in allp], y=[p[2] for p in allp], mode="markers", name="models",
                            marker=dict(symbol=["star"] * len(pts) + ["star-diamond"] * len(extra), size=14,
                                        color=["orange"] * len(pts) + ["deepskyblue"] * len(extra),
                                        line=dict(color="black", width=1)),
                            text=hover, hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(margin=FAMOUS_MARGIN)
    height = 700
    style(fig, f"Famous models on the frontier of {law.source.split(':')[0]} law", height=height, legend_below=True)
    fig.update_layout(margin=FAMOUS_MARGIN)
    set_log_axis(fig, "x", n_range, "count", "parameters N", pad=0)
    set_log_axis(fig, "y", d_range, "count", "tokens D", pad=0)
    box = (WIDTH - FAMOUS_MARGIN["l"] - FAMOUS_MARGIN["r"], height - FAMOUS_MARGIN["t"] - FAMOUS_MARGIN["b"])
    place_labels(fig, [(n, d, name) for name, n, d in allp], n_range, d_range, plot_box=box)
    return fig


def cost(curve: dict):
    """Training, inference and total compute against N at a fixed loss (`scaling.plan.inference.
    cost_curve`): the minimum, the Chinchilla-optimal N (least training compute) and the plan's
    N marked."""
    g = go()
    fig = g.Figure()
    n = np.asarray(curve["params"])
    for key, name, dash in (("train", "training", "dot"), ("inference", "inference", "dash"),
                            ("total", "training + inference", "solid")):
        fig.add_trace(g.Scatter(x=n, y=curve[key], mode="lines", name=name, line=dict(dash=dash),
                                customdata=curve["tokens"],
                                hovertemplate=f"{name}: N %{{x:.3s}}, D %{{customdata:.3s}}: %{{y:.3g}} FLOPs"
                                              "<extra></extra>"))
    total = np.asarray(curve["total"])
    marks = [("least compute", curve.get("optimal_params"), "x", "black"),
             ("Chinchilla-optimal", curve.get("chinchilla_params"), "diamond", "red"),
             ("the plan", curve.get("plan_params"), "star", "orange")]
    for name, x, symbol, colour in marks:
        if x is None:
            continue
        y = float(np.exp(np.interp(np.log(x), np.log(n), np.log(total))))
        fig.add_trace(g.Scatter(x=[x], y=[y], mode="markers", name=f"{name}: N {count_label(x)}",
                                marker=dict(symbol=symbol, size=13, color=colour, line=dict(color="black", width=1)),
                                hovertemplate=f"{name}: N %{{x:.3s}}, total %{{y:.3g}} FLOPs<extra></extra>"))
    style(fig, f"Compute to reach loss {curve['loss']:.4g} and serve {count_label(curve['inference_tokens'])} tokens, "
               "against model size", legend_below=True)
    set_log_axis(fig, "x", n, "count", "parameters N")
    set_log_axis(fig, "y", np.r_[curve["train"], curve["inference"], total], "flops", "compute (FLOPs)")
    return fig


__all__ = ["frontier", "contours", "famous", "cost", "CHINCHILLA", "KAPLAN"]
