"""Compute-optimal scaling laboratory for encoder-decoder Transformers.

Data flows one way: corpus -> token shards -> runs -> results table -> fits -> plan and pictures.

Public API (for a notebook; docs/fitting-in-a-notebook.md has the full table)
------------------------------------------------------------------------------
scaling.fit(data, columns=None, **options) -> scaling.fit.Fit
    Fit Chinchilla's three approaches to a table of runs: a path (.csv, .parquet) or a
    DataFrame (polars, pandas, Arrow). columns maps names, {"params": "N"} or "params=N".
Fit.params, Fit.conf_int(level=0.95)
    The fitted values, and with bootstrap intervals, as polars DataFrames.
Fit.summary()
    The text `scaling fit` prints.
Fit.predict(N, D, interval=0.95), Fit.optimal(C, interval=0.95)
    Loss at (N, D); the compute-optimal N, D and loss at compute C; with intervals.
Fit.without(budgets=..., runs=...), Fit.where(mask), Fit.holdout(), Fit.rollout()
    Refits on a subset of the runs, and the held-out and leave-future-out checks.
Fit.plot.frontier(), .isoflop(), .contours(), .residuals(), .loss_curves(), .heldout()
    The figures (plotly), as `scaling report` draws them; scaling.figures.show(fig) shows one
    with a static PNG beside it.
Fit.to_json(path=None), scaling.fit.Fit.from_json(path)
    fit.json, the file `scaling fit --out` writes and `scaling plan --fit` reads.
scaling.compare(sweeps, metric="bpb_clm", columns=None, plan_compute=None) -> Comparison
    Recipes compared: the compute multiplier k(C) each needs to match the first one's
    compute-optimal loss, with bootstrap intervals; .multiplier, .optimal, .summary()
    (docs/recipes.md).
scaling.fit.FitWarning
    The category of a fit's warnings (warnings.warn).
scaling.fit.load_runs, scaling.fit.fit_all, scaling.fit.FitOptions, scaling.fit.text.format_fit
    The pieces underneath: a cleaned table of runs, the fit record, its options, its text.
scaling.plan.request.PlanRequest, scaling.plan.record.build, scaling.plan.text.format_all
    A training plan from a fit (`scaling plan`'s arguments as values), and its text.
scaling.figures
    Every figure as a function of a fit record and its runs.
scaling.load_run(run_dir, device="cpu") -> scaling.use.load.KeptModel
    A completed run's kept model: .model (eval mode), .tokenizer, .config, .validate()
    (docs/training.md, "Models you keep").

`scaling.fit`, `scaling.plan`, `scaling.figures` and `scaling.report` are loaded on first use
(`import scaling` loads none of them, nor polars, plotly or torch); so is `scaling.load_run`.
"""

import importlib
import os

# Before torch (and its OpenMP runtime) loads: idle threads sleep instead of spinning, so a
# run beside other work does not burn the cores that work needs (see scaling/base/threads.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Jobs pickled under release 0.1's module paths still load (scaling/moved.py).
from scaling import moved as _moved  # noqa: E402

_moved.install()

# The subpackages a notebook reaches as attributes of `scaling`: imported on first use (a
# module-level __getattr__), so `import scaling` stays light for the CLI and the job workers.
_LAZY = ("fit", "plan", "figures", "report")


def __getattr__(name: str):
    if name == "compare":    # recipes compared (scaling/fit/compare.py): a function, loaded with the fit
        return importlib.import_module("scaling.fit.compare").compare
    if name == "load_run":   # torch loads with it: only when a notebook asks for a model
        return importlib.import_module("scaling.use.load").load_run
    if name in _LAZY:
        return importlib.import_module(f"scaling.{name}")
    raise AttributeError(f"module 'scaling' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"load_run", "compare"})
