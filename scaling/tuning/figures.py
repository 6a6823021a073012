"""The picture of a tuning: loss against lr per size, and the best lr against N with the
fitted rule and its bootstrap band (a plotly Figure; `scaling tune --plots DIR` writes it)."""

from __future__ import annotations

from pathlib import Path

from scaling.base.config import format_count

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def tune_figure(doc: dict):
    """doc: tuned.json (rules.write)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation loss against peak lr, per size",
                                                       "best lr against N (non-embedding)"))
    fit = doc.get("fits", {}).get("lr")
    for i, s in enumerate(doc["sizes"]):
        c, name = COLORS[i % len(COLORS)], f"{s['key']} ({format_count(s['n_params_nonembed'])} non-emb)"
        ts = sorted(s["trials"], key=lambda t: t["lr"])
        fig.add_trace(go.Scatter(x=[t["lr"] for t in ts], y=[t["loss"] for t in ts], mode="lines+markers",
                                 name=name, legendgroup=s["key"], line={"color": c}), row=1, col=1)
        if s["best"]:
            fig.add_trace(go.Scatter(x=[s["best"]["lr"]], y=[s["best"]["loss"]], mode="markers", showlegend=False,
                                     legendgroup=s["key"], marker={"symbol": "star", "size": 14, "color": c},
                                     hovertext=f"best: trial {s['best']['trial']}"), row=1, col=1)
            fig.add_trace(go.Scatter(x=[s["n_params_nonembed"]], y=[s["best"]["lr"]], mode="markers",
                                     showlegend=False, marker={"size": 10, "color": c}), row=1, col=2)
        if fit:  # the rule's lr for this size, on the loss curve
            lr = fit["coef"] * s["n_params_nonembed"] ** fit["exp"]
            fig.add_vline(x=lr, line={"color": c, "dash": "dash", "width": 1}, row=1, col=1)
    if fit:
        b = fit["band"]
        fig.add_trace(go.Scatter(x=b["n"] + b["n"][::-1], y=b["hi"] + b["lo"][::-1], fill="toself", mode="lines",
                                 line={"width": 0}, fillcolor="rgba(0,0,0,0.12)", name="95% bootstrap band"),
                      row=1, col=2)
        fig.add_trace(go.Scatter(x=b["n"], y=[fit["coef"] * n ** fit["exp"] for n in b["n"]], mode="lines",
                                 line={"color": "black"},
                                 name=f"lr*(N) = {fit['coef']:.3g} N^{fit['exp']:.3f}"), row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(type="log", row=1, col=col)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="peak lr", row=1, col=1)
    fig.update_yaxes(title_text="final val loss (nats/token)", row=1, col=1)
    fig.update_xaxes(title_text="N (non-embedding parameters)", row=1, col=2)
    fig.update_yaxes(title_text="best peak lr", row=1, col=2)
    fig.update_layout(template="plotly_white", height=450, width=1100)
    return fig


def write_figure(doc: dict, dir: Path) -> Path:
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / "tune_lr.html"
    tune_figure(doc).write_html(path, include_plotlyjs=True)
    return path
