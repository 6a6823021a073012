"""Figures of a sweep, its fits and a plan: each a function returning a plotly Figure, usable
from a notebook (`fig.show()`, or `figures.show(fig)` with a static PNG beside it), on the
report page (`scaling report`) or alone (`scaling plot`).

    import scaling
    from scaling import figures
    fit = scaling.fit("runs/demo-cpu/results.parquet")
    figures.show(fit.plot.frontier())                          # the Fit's accessor
    figures.loss_curves(fit.table, fit.curves, fit.record)     # the same, by function

Modules: axes (ticks, hover, colours, label placement), sweep (runs and their fits),
laws (fitted and published laws, plans), tasks (the two-step task law), compare (recipes
compared: frontiers and k(C)), page (HTML with plotly.js once, PNG and SVG, a notebook's
display), accessor (`Fit.plot`, and the fit's figures in the report's order).
"""

from scaling.figures.accessor import FitPlots, fit_figures
from scaling.figures.compare import comparison
from scaling.figures.laws import contours, cost, famous, frontier
from scaling.figures.page import show
from scaling.figures.sweep import heldout, isoflop_profiles, loss_curves, residuals
from scaling.figures.tasks import task_steps
from scaling.plan.inference import Serving, cost_curve


def plan_cost(plan: dict, law, flop):
    """The training + serving cost against N of a plan record that serves tokens
    (`--inference-tokens`); None for one that does not."""
    x = plan.get("inference")
    if x is None:
        return None
    serving = Serving(x["inference_tokens"], x["input_len"], x["output_len"])
    return cost(cost_curve(law, flop, serving, x["target_loss"], x))


def plan_figures(plan: dict, law, flop) -> list:
    """The figures of a plan record (`scaling plan --plots`): the training + serving cost when
    it serves tokens, then the models on the law's frontier (the famous ones for --compare)."""
    compare = plan if "compare" in plan else {"compare": []}
    figs = [famous(compare, law, flop, plan=None if "compare" in plan else plan)]
    c = plan_cost(plan, law, flop)
    if c is not None:
        figs.insert(0, c)
    return figs


__all__ = ["loss_curves", "isoflop_profiles", "frontier", "contours", "residuals", "heldout", "task_steps", "famous",
           "cost", "fit_figures", "plan_cost", "plan_figures", "show", "FitPlots", "comparison"]
