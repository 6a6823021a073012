"""Fitting Chinchilla's three approaches to a table of runs, from a notebook or the CLI.

The package itself is callable: `scaling.fit(data, columns=None, **options)` fits a path
(.csv, .parquet) or a DataFrame (polars, pandas, anything with `__arrow_c_stream__` or
`__dataframe__`) and returns a `Fit` (scaling/fit/result.py; docs/fitting-in-a-notebook.md):

    import scaling
    fit = scaling.fit("runs/demo-cpu/results.parquet", columns={"params": "params_nonembed"}, n_boot=200)
    print(fit.summary())
    fit.predict(1e9, 2e10)          # loss with its 95% interval, a polars DataFrame
    fit.optimal([1e21, 1e23])       # N_opt, D_opt and their loss, with intervals
    fit.plot.frontier().show()

Underneath, the same pieces `scaling fit` uses, each usable alone: `load_runs` (a table of runs,
cleaned), `fit_all` (every approach with bootstrap intervals: the record, fit.json), `FitOptions`
(how), `scaling.fit.text.format_fit` (the text). A column mapping is given one way everywhere:
a dict {"params": "Model Size"} or the string "params=Model Size" (`column_mapping`).

Modules: table (input), law (Approach 3), isoflop (Approaches 1 and 2), repeat (repeated
data), lbfgs (the batched optimiser), report (all of it with bootstrap intervals), rollout
(leave-future-out), text (what `scaling fit` prints), result (the `Fit` object), design (the next
runs, `scaling design`).
"""

import sys
import types

from scaling.fit.law import LawData, fit_law, predict_loss, frontier, optimal_nd, bootstrap_law
from scaling.fit.report import FitOptions, fit_all, law_from_fit
from scaling.fit.result import Fit, FitWarning, fit as _fit
from scaling.fit.table import load_runs, load_curves, find_curves, parse_columns, column_mapping

__all__ = ["Fit", "FitWarning", "LawData", "fit_law", "predict_loss", "frontier", "optimal_nd", "bootstrap_law",
           "FitOptions", "fit_all", "law_from_fit", "load_runs", "load_curves", "find_curves",
           "parse_columns", "column_mapping"]


class _CallableModule(types.ModuleType):
    """The package `scaling.fit`, callable: `scaling.fit(data, ...)` is `scaling.fit.result.fit`,
    while `scaling.fit.law`, `scaling.fit.text`, ... stay its submodules."""

    def __call__(self, data, columns=None, **options) -> Fit:
        """scaling.fit(data, columns=None, *, curves=None, drop_top_loss=0, invalid="raise",
        options=None, **FitOptions fields) -> Fit. See scaling.fit.result.fit."""
        return _fit(data, columns, **options)


sys.modules[__name__].__class__ = _CallableModule
