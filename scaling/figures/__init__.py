"""Figures of a sweep, its fits and a plan: each a function returning a plotly Figure, usable
from a notebook (`fig.show()`), on the report page (`scaling report`) or alone (`scaling plot`).

    from scaling.fit import load_runs, load_curves, find_curves, fit_all
    from scaling import figures
    figures.loss_curves(table, curves, fit).show()

Modules: axes (ticks, hover, colours, label placement), sweep (runs and their fits),
laws (fitted and published laws, plans), page (HTML with plotly.js once, PNG and SVG).
"""

from scaling.figures.laws import contours, cost, famous, frontier
from scaling.figures.sweep import heldout, isoflop_profiles, loss_curves, residuals


def fit_figures(fit: dict, table, curves=None) -> list:
    """The figures of a fit, in the report's order (None where the fit lacks the approach)."""
    figs = [loss_curves(table, curves, fit), isoflop_profiles(fit, table), frontier(fit, table),
            contours(fit, table), residuals(fit, table), heldout(fit, table)]
    return [f for f in figs if f is not None]


__all__ = ["loss_curves", "isoflop_profiles", "frontier", "contours", "residuals", "heldout", "famous", "cost",
           "fit_figures"]
