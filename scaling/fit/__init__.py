"""Fitting Chinchilla's three approaches to a table of runs (usable from a notebook).

    from scaling.fit import load_runs, fit_all, FitOptions
    table = load_runs("results.parquet")
    fit = fit_all(table, opts=FitOptions(n_boot=1000))
    fit["approach3"]["alpha"], fit["approach3"]["ci"]["alpha"]

Modules: table (input), law (Approach 3), isoflop (Approaches 1 and 2), repeat (repeated
data), lbfgs (the batched optimiser), report (all of it with bootstrap intervals).
"""

from scaling.fit.law import LawData, fit_law, predict_loss, frontier, optimal_nd, bootstrap_law
from scaling.fit.report import FitOptions, fit_all, law_from_fit
from scaling.fit.table import load_runs, load_curves, find_curves, parse_columns

__all__ = ["LawData", "fit_law", "predict_loss", "frontier", "optimal_nd", "bootstrap_law",
           "FitOptions", "fit_all", "law_from_fit", "load_runs", "load_curves", "find_curves",
           "parse_columns"]
