"""Figures of a sweep's runs and of the fits read off them: loss curves with Approach 1's
envelope (Chinchilla's Figure 2, left), IsoFLOP profiles (Figure 3), Approach 3's residuals,
and the held-out check. Each takes the results table (`scaling.fit.load_runs`), the fit
record (`scaling.fit.fit_all`, fit.json) and returns a plotly Figure."""

from __future__ import annotations

import numpy as np

from scaling.figures.axes import (budget_colours, count_label, flops_label, go, log_ticks, run_hover, set_log_axis,
                                  size_colour, style)
from scaling.fit.edges import Edge, edges_of_table
from scaling.fit.isoflop import group_budgets
from scaling.fit.law import predict_loss
from scaling.fit.repeat import predict as predict_repeated


def _runs(table) -> dict:
    """Columns of the table as arrays, and the run names."""
    out = {k: table.col(k) for k in ("params", "tokens", "flops", "loss")}
    out["run"] = [str(r) for r in table.df["run"].to_list()]
    return out


def _hovers(r: dict, idx=None, extra=None) -> list[str]:
    """Hover text of the runs idx (all by default); extra[k] is appended to the k-th."""
    idx = list(range(len(r["run"])) if idx is None else idx)
    extra = [""] * len(idx) if extra is None else extra
    return [run_hover(r["run"][i], r["params"][i], r["tokens"][i], r["flops"][i], r["loss"][i], x)
            for i, x in zip(idx, extra)]


def loss_curves(table, curves=None, fit: dict | None = None):
    """Validation loss against FLOPs for every run, coloured by size, with Approach 1's
    envelope (the lowest loss any run reached at each compute) and the envelope's points the
    power laws were fitted on. Without curves, the runs' final points."""
    g = go()
    r = _runs(table)
    fig = g.Figure()
    n_lo, n_hi = float(r["params"].min()), float(r["params"].max())
    xs, ys = list(r["flops"]), list(r["loss"])
    if curves is not None and curves.height:
        for (run,), c in curves.sort("flops").group_by(["run"], maintain_order=True):
            n = float(c["params"][0])
            f, t, l = (c[k].to_numpy() for k in ("flops", "tokens", "loss"))
            xs += list(f)
            ys += list(l)
            fig.add_trace(g.Scatter(
                x=f, y=l, mode="lines+markers", line=dict(color=size_colour(n, n_lo, n_hi), width=1.5),
                marker=dict(size=4), name=f"{run} (N {count_label(n)})", legendgroup="runs", showlegend=False,
                text=[run_hover(run, n, tt, ff, ll, "<br>(a validation point of its curve)") for ff, tt, ll in zip(f, t, l)],
                hovertemplate="%{text}<extra></extra>"))
    # Final points on top, coloured by size, with a colour bar standing for the sizes.
    fig.add_trace(g.Scatter(
        x=r["flops"], y=r["loss"], mode="markers", name="runs (final point; colour: N)",
        marker=dict(size=8, color=np.log10(r["params"]), colorscale="Viridis", cmin=np.log10(n_lo),
                    cmax=np.log10(n_hi) if n_hi > n_lo else np.log10(n_lo) + 1, line=dict(color="black", width=0.5),
                    colorbar=dict(title="N", tickvals=list(np.log10(_size_ticks(n_lo, n_hi))),
                                  ticktext=[count_label(v) for v in _size_ticks(n_lo, n_hi)], len=0.8)),
        text=_hovers(r), hovertemplate="%{text}<extra></extra>"))
    a1 = (fit or {}).get("approach1")
    env = (a1 or {}).get("envelope") or {}
    if env.get("loss"):
        fig.add_trace(g.Scatter(
            x=env["flops"], y=env["loss"], mode="markers", name="approach 1: envelope points fitted",
            marker=dict(color="black", size=4, symbol="circle"),
            text=[f"envelope at C {flops_label(c)}: N {count_label(n)}, D {count_label(d)}, loss {l:.4f}"
                  for c, n, d, l in zip(env["flops"], env["N"], env["D"], env["loss"])],
            hovertemplate="%{text}<extra></extra>"))
    source = "validation curves" if curves is not None else "final points only (no curves.parquet)"
    style(fig, f"Loss against training compute, every run ({source}); black: Approach 1's envelope", legend_below=True)
    set_log_axis(fig, "x", xs, "flops", "training compute C (FLOPs)")
    fig.update_yaxes(title="validation loss (nats/token)")
    return fig


def _size_ticks(lo: float, hi: float) -> list[float]:
    if hi <= lo:
        return [lo]
    return log_ticks(lo, hi, "count")[0]


def _budget_groups(fit: dict, table):
    """Each run's budget group and the groups' FLOPs, as Approach 2 groups them."""
    return group_budgets(table.col("flops"), table.col("budget") if table.has("budget") else None)


def _edges(fit: dict, table) -> list[Edge]:
    """The fit's edge budgets (a fit.json from before they were recorded: found on the runs)."""
    if "edges" in fit:
        return [Edge.from_dict(e) for e in fit["edges"]]
    return edges_of_table(table)


def _why_no_approach2(fit: dict) -> str:
    """The fit's own words on why approach 2 is missing."""
    for w in fit.get("warnings") or []:
        if w.startswith("approach 2:"):
            return w[len("approach 2: "):]
    return "not asked for"


def isoflop_profiles(fit: dict, table):
    """Final loss against N (left) and against D (right) per FLOP budget, with each budget's
    fitted parabola and its minimum (Chinchilla's Figure 3). A refused budget's curve is
    dotted; its runs are still shown. A budget whose lowest loss is at an edge of its sizes
    has that run ringed (open circle) and says which way its sizes should move. Drawn for
    every fit with runs: without Approach 2, the profiles alone, and the title says why."""
    from plotly.subplots import make_subplots   # here, not above: plotly loads with the first figure drawn (axes.go)
    g = go()
    a2 = fit.get("approach2") or {}
    r = _runs(table)
    labels, values = _budget_groups(fit, table)
    fitted = a2.get("budgets") or []
    fitted = fitted if len(fitted) == len(values) else [None] * len(values)
    edges = _edges(fit, table)
    colours = budget_colours(len(values))
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("against parameters N", "against tokens D"))
    for gi in np.argsort(values):
        idx = np.flatnonzero(labels == gi)
        b = fitted[gi]
        edge = next((e for e in edges if np.isclose(e.budget, values[gi], rtol=1e-6)), None)
        name = f"C = {flops_label(values[gi])} FLOPs" + ("" if b is None or b["refused"] is None else " (refused)")
        if edge is not None:
            name += f" (lowest at its {edge.side} size: move the sizes {'up' if edge.side == 'largest' else 'down'})"
        order = idx[np.argsort(r["params"][idx])]
        _profile_traces(fig, g, r, order, b, name, colours[gi])
        if edge is not None:
            at = order[np.argmin(r["loss"][order])]
            for k, x in ((1, r["params"][at]), (2, r["tokens"][at])):
                fig.add_trace(g.Scatter(x=[x], y=[r["loss"][at]], mode="markers", legendgroup=name, showlegend=False,
                                        marker=dict(symbol="circle-open", size=18, color="black", line=dict(width=2)),
                                        text=[edge.line()], hovertemplate="%{text}<extra></extra>"), row=1, col=k)
    lines = (["IsoFLOP profiles (Approach 2): final loss per budget, parabola and minimum (x); "
              "dotted: refused, no minimum inside the sizes"] if a2 else
             ["IsoFLOP profiles: final loss per budget; no approach 2 in this fit:",
              _why_no_approach2(fit).removesuffix(" (skipped)")])
    if edges:
        lines.append(f"ringed: {len(edges)} budget(s) with the lowest loss at an edge of the sizes "
                     "(scaling sweep extend adds the sizes beyond)")
    style(fig, "<br>".join(lines), legend_below=True)
    # Room above the panels' own titles for every line of the figure's title.
    fig.update_layout(margin=dict(t=60 + 22 * len(lines)), title=dict(font=dict(size=14), y=0.975, yanchor="top"))
    set_log_axis(fig, "x", r["params"], "count", "parameters N", row=1, col=1)
    set_log_axis(fig, "x", r["tokens"], "count", "tokens D", row=1, col=2)
    fig.update_yaxes(title="final validation loss (nats/token)", row=1, col=1)
    return fig


def _profile_traces(fig, g, r: dict, order, b: dict | None, name: str, col) -> None:
    """One budget's runs (sorted by N), and where Approach 2 fitted it (`b`, its record), its
    parabola and minimum; without `b`, a line through the runs."""
    n, d = r["params"][order], r["tokens"][order]
    hov = _hovers(r, order)
    for k, x in ((1, n), (2, d)):
        fig.add_trace(g.Scatter(x=x, y=r["loss"][order], mode="markers" if b else "markers+lines", name=name,
                                legendgroup=name, showlegend=k == 1, marker=dict(color=col, size=8),
                                line=dict(color=col, width=1, dash="dot"), text=hov,
                                hovertemplate="%{text}<extra></extra>"), row=1, col=k)
    if b is None:
        return
    if b["parabola_logN"] is not None and len(order) >= 2:
        lo, hi = b.get("parabola_N_range") or (n.min(), n.max())
        xs = np.geomspace(lo, hi, 60)
        ys = np.polyval(b["parabola_logN"], np.log(xs))
        # D along the budget at each N: the runs' own log D against log N (an IsoFLOP line).
        ds = np.exp(np.interp(np.log(xs), np.log(n), np.log(d)))
        line = dict(color=col, dash="solid" if b["refused"] is None else "dot")
        for k, x in ((1, xs), (2, ds)):
            fig.add_trace(g.Scatter(x=x, y=ys, mode="lines", line=line, legendgroup=name, showlegend=False,
                                    hoverinfo="skip"), row=1, col=k)
    if b["N_opt"]:
        txt = (f"minimum at C {flops_label(b['flops'])}: N_opt {count_label(b['N_opt'])}, "
               f"D_opt {count_label(b['D_opt'])}, loss {b['loss_opt']:.4f}")
        for k, x in ((1, b["N_opt"]), (2, b["D_opt"])):
            fig.add_trace(g.Scatter(x=[x], y=[b["loss_opt"]], mode="markers", legendgroup=name, showlegend=False,
                                    marker=dict(symbol="x", size=12, color="black"), text=[txt],
                                    hovertemplate="%{text}<extra></extra>"), row=1, col=k)


def residuals(fit: dict, table):
    """Approach 3's relative residuals, (loss - predicted) / predicted, against N (coloured by
    budget) and against C (coloured by size): a law that fits leaves no trend in either."""
    from plotly.subplots import make_subplots   # here, not above: plotly loads with the first figure drawn (axes.go)
    g = go()
    a3 = fit.get("approach3")
    if not a3:
        return None
    r = _runs(table)
    dc = a3.get("data_constrained")
    if dc and table.has("unique_tokens"):
        # Repeated data: the law's own prediction there is through D' and N', not D and N.
        fc = a3.get("flop_count") or {}
        pred = predict_repeated(a3, r["params"], r["tokens"], table.col("unique_tokens"), dc["R_star_D"],
                                dc["R_star_N"], (fc.get("k", 6.0), fc.get("e", 1.0)))
    else:
        pred = predict_loss(a3, r["params"], r["tokens"])
    res = (r["loss"] - pred) / pred
    labels, values = group_budgets(r["flops"], table.col("budget") if table.has("budget") else None)
    extra = [f"<br>predicted {p:.4f}, residual {100 * e:+.2f}%" for p, e in zip(pred, res)]
    hov = _hovers(r, extra=extra)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("against parameters N (colour: budget)", "against compute C (colour: N)"))
    colours = budget_colours(len(values))
    for gi, v in enumerate(values):
        idx = np.flatnonzero(labels == gi)
        fig.add_trace(g.Scatter(x=r["params"][idx], y=100 * res[idx], mode="markers", name=f"C ≈ {flops_label(v)}",
                                marker=dict(color=colours[gi], size=8), text=[hov[i] for i in idx],
                                hovertemplate="%{text}<extra></extra>"), row=1, col=1)
    n_lo, n_hi = float(r["params"].min()), float(r["params"].max())
    fig.add_trace(g.Scatter(x=r["flops"], y=100 * res, mode="markers", name="runs by N", showlegend=False,
                            marker=dict(color=[size_colour(n, n_lo, n_hi) for n in r["params"]], size=8,
                                        line=dict(color="black", width=0.5)),
                            text=hov, hovertemplate="%{text}<extra></extra>"), row=1, col=2)
    for k in (1, 2):
        fig.add_hline(y=0, line=dict(color="gray", width=1), row=1, col=k)
    deg = " (the law is degenerate on these runs: read it as a curve fit)" if a3.get("degenerate") else ""
    style(fig, "Approach 3's residuals, (loss - L(N, D)) / L(N, D)" + deg, legend_below=True)
    set_log_axis(fig, "x", r["params"], "count", "parameters N", row=1, col=1)
    set_log_axis(fig, "x", r["flops"], "flops", "training compute C (FLOPs)", row=1, col=2)
    fig.update_yaxes(title="residual (% of the predicted loss)", row=1, col=1)
    return fig


def heldout(fit: dict, table=None):
    """The held-out check: Approach 3 refitted without the largest budget (or the K largest
    runs, `--holdout-top`) predicts the runs it did not see; predicted against observed loss,
    with the runs it was fitted on beside them. On the diagonal: predicted exactly."""
    g = go()
    hb = fit.get("holdout_budget") or {}
    h3 = hb.get("approach3")
    ho = fit.get("holdout")
    if not h3 and not ho:
        return None
    fig = g.Figure()
    lo_hi: list[float] = []
    sets = []
    if h3:
        sets.append((h3, f"held-out budget {flops_label(hb['budget'])} "
                         f"({hb['extrapolation']:.2g}x the largest fitted)", "red", hb.get("budget")))
    if ho:
        sets.append((ho, f"the {ho['k']} largest-compute runs (--holdout-top)", "darkorange", None))
    for rec, name, colour, budget in sets:
        held = {x["run"] for x in rec["runs"]}
        if table is not None:
            # The runs the refit saw, predicted by the same refit law (in-sample).
            r = _runs(table)
            seen = [i for i, run in enumerate(r["run"]) if run not in held]
            if seen:
                p = predict_loss(rec["params"], r["params"][seen], r["tokens"][seen])
                lo_hi += list(p) + list(r["loss"][seen])
                fig.add_trace(g.Scatter(
                    x=r["loss"][seen], y=p, mode="markers", name=f"fitted runs ({name.split(' (')[0]} refit)",
                    marker=dict(color="lightgray", size=7, line=dict(color="gray", width=0.5)),
                    text=_hovers(r, seen, [f"<br>predicted {q:.4f} (in sample)" for q in p]),
                    hovertemplate="%{text}<extra></extra>"))
        runs = rec["runs"]
        obs = [x["loss"] for x in runs]
        pred = [x["predicted"] for x in runs]
        lo_hi += obs + pred
        text = [run_hover(x["run"], x["params"], x["tokens"], x.get("flops", budget or float("nan")), x["loss"],
                          f"<br>predicted {x['predicted']:.4f} ({100 * x['rel_error']:+.2f}%)") for x in runs]
        fig.add_trace(g.Scatter(x=obs, y=pred, mode="markers", name=f"{name}: mean |error| "
                                f"{100 * rec['mean_abs_rel_error']:.2f}%, max {100 * rec['max_abs_rel_error']:.2f}%",
                                marker=dict(color=colour, size=10, symbol="diamond", line=dict(color="black", width=1)),
                                text=text, hovertemplate="%{text}<extra></extra>"))
    lo, hi = min(lo_hi), max(lo_hi)
    pad = 0.05 * (hi - lo or 1)
    fig.add_trace(g.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", name="predicted = observed",
                            line=dict(color="black", dash="dash", width=1), hoverinfo="skip"))
    style(fig, "Held-out check: Approach 3 fitted without the largest budget, predicting it", legend_below=True)
    fig.update_xaxes(title="observed final loss (nats/token)", range=[lo - pad, hi + pad])
    fig.update_yaxes(title="predicted loss (nats/token)", range=[lo - pad, hi + pad])
    return fig
