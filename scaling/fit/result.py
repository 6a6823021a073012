"""A fit as an object, for a notebook: `scaling.fit(data, columns=..., **options)` returns a
`Fit`, which holds the fit record (`fit_all`'s dict, the fit.json file format) and the runs it
was fitted on, and answers in DataFrames and arrays:

    import scaling
    fit = scaling.fit("runs/demo-cpu/results.parquet", columns={"params": "params_nonembed"}, n_boot=200)
    fit.params                   # one row per parameter per approach
    fit.conf_int(0.9)            # the same, with a 90% bootstrap interval
    fit.predict(N, D)            # L(N, D) with its interval, over arrays
    fit.optimal([1e21, 1e23])    # N_opt, D_opt and their loss at each compute, with intervals
    fit.without(budgets=[max(fit.budgets)]).summary()
    fit.plot.frontier()          # a plotly Figure (scaling.figures draws it)

Its warnings are raised with `warnings.warn` (category `FitWarning`) as the fit is made, and
stay in the record (`fit.warnings`, the end of `fit.summary()`). `scaling fit` is a thin layer
over the same object. docs/fitting-in-a-notebook.md has the table of every name.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import polars as pl

from scaling.base.errors import UserError
from scaling.base.intervals import CI
from scaling.base.rundir import atomic_write_json
from scaling.fit import compute, isoflop, law, olmo, tasklaw
from scaling.fit.edges import Edge, edges_of_table
from scaling.fit.report import FitOptions, approach3_draws, fit_all, holdout, holdout_budget, read_fit_file
from scaling.fit.rollout import rollout
from scaling.fit.table import RunTable, as_frame, column_mapping, find_curves, load_curves, load_runs
from scaling.fit.tasklaw import Step2Options
from scaling.fit.text import format_fit

# The figures are a layer above the fit (docs/architecture.md): `Fit.plot` reaches them by this
# name, imported when a figure is asked for, never by a static import (lint-imports would, rightly,
# refuse one). The one upward seam of the package; scaling/figures/accessor.py is its other end.
PLOTS_MODULE = "scaling.figures.accessor"

# Approach 3's keys in the record, point and interval: the law, then what it implies.
LAW_KEYS = law.PARAMS
DERIVED_KEYS = ("a", "b", "G", "tokens_per_param")
POWER_KEYS = ("a", "k_N", "b", "k_D")        # approaches 1 and 2: N_opt = k_N C^a, D_opt = k_D C^b
REPEAT_KEYS = ("R_star_D", "R_star_N")

# The CLI's flag names, for a helpful word when one is given to `scaling.fit` by mistake.
_FLAG_NAMES = {"bootstrap": "n_boot", "approach": "approaches", "fix": "fixed", "no_holdout": "holdout_budget",
               "full_grid": "refine", "no_progress": "progress"}


class FitWarning(UserWarning):
    """A warning of a fit (a skipped approach, a degenerate law, runs dropped, a traded-off
    E and alpha): raised with `warnings.warn` when the fit is made, and kept in its record."""


def fit(data, columns=None, *, curves=None, drop_top_loss: int = 0, invalid: str = "raise",
        options: FitOptions | None = None, target: str | None = None, accuracy: str | None = None,
        step2: Step2Options | None = None, **opts) -> "Fit":
    """Fit Chinchilla's approaches to a table of runs; returns a `Fit`.

    data: a path (.csv, .parquet, as `scaling fit` reads), a polars or pandas DataFrame, or any
    table with `__arrow_c_stream__` or `__dataframe__`. columns: the column mapping, a dict
    {"params": "N", ...} or the CLI's string "params=N,tokens=D". curves: loss curves for
    Approach 1 (a path or a DataFrame; default: curves.parquet beside a results file; False:
    none). drop_top_loss: drop the K highest-loss runs first. invalid: "raise" (default) makes a
    run with a missing, NaN or non-positive value a UserError naming the column; "drop" leaves
    it out with a warning, as `scaling fit` does. options (or keyword arguments, the field names
    of `scaling.fit.FitOptions`: n_boot, seed, approaches, method, fixed, holdout_top, rollout,
    ...): how to fit; naming `approaches` makes an approach the data refuse an error, as
    `--approach` does. Unlike the CLI, no progress bar unless progress=True.

    target: fit every approach to this column instead of `loss` (a task's loss,
    `task.<name>.bpb`); with it, the two-step task law too (scaling/fit/tasklaw.py): step 2
    fits `accuracy` (default: the target's task.<name>.acc) against the target over the
    curves' points, `step2` says how (`scaling.fit.tasklaw.Step2Options`). A folder of OLMo
    ladder runs (SIZE-MxC.csv) is read as results and curves (scaling/fit/olmo.py)."""
    opts = _options(options, opts)
    # Read only when something uses them: approach 1, or a target's step 2.
    data, curve_frame, source = _read_source(data, curves, 1 in opts.approaches or target is not None)
    if target is not None:
        data, columns, curve_frame = _on_target(data, columns, curve_frame, target, source)
    table = load_runs(data, columns, drop_top_loss=drop_top_loss, invalid=invalid)
    if source is not None:
        table.source = source
    curve_table = None
    if 1 in opts.approaches and curve_frame is not None:
        curve_table = load_curves(curve_frame, table)
    record = fit_all(table, curve_table, opts)
    task_args = None
    if target is not None:
        task_args = _TaskArgs(data, column_mapping(columns).get("run", "run"), curve_frame, target, accuracy, step2)
        task_args.add_to(record, table, opts)
    f = Fit(record, table, curve_table, opts)
    f._task_args = task_args
    f._warn()
    return f


def _read_source(data, curves, want_curves: bool):
    """(runs, curves frame or None, source name or None) of what `scaling.fit` is given: a
    folder of OLMo ladder runs is read as both (scaling/fit/olmo.py); a results file brings
    curves.parquet beside it, when `curves` is None and `want_curves`. A sweep directory is its
    collected table, results.parquet."""
    if isinstance(data, (str, Path)) and (Path(data) / "results.parquet").is_file():
        data = Path(data) / "results.parquet"
    if isinstance(data, (str, Path)) and olmo.is_ladder(data):
        source = str(data)
        data, ladder_curves = olmo.read_ladder(data)
        curves = ladder_curves if curves is None else curves
    else:
        source = str(data) if isinstance(data, (str, Path)) else None
        if curves is None and isinstance(data, (str, Path)):
            curves = find_curves(data, None)
    curve_frame = None if curves is None or curves is False or not want_curves else as_frame(curves)[0]
    return data, curve_frame, source


@dataclass
class _TaskArgs:
    """What the chain was fitted from, kept so that `Fit.where` and `Fit.without` refit it."""

    frame: pl.DataFrame
    run_col: str
    curves: pl.DataFrame | None
    target: str
    accuracy: str | None
    step2: Step2Options | None

    def add_to(self, record: dict, table: RunTable, opts: FitOptions) -> None:
        """The chain on `table`'s runs into `record` (fit_all's, of the same runs): target, task, warnings."""
        record["target"] = self.target
        record["task"] = _chain(table, self.frame, self.run_col, self.curves, self.target, self.accuracy,
                                self.step2, opts, _step1_of(record, table, opts))
        record["warnings"] += record["task"]["warnings"]

    @classmethod
    def of_record(cls, record: dict, data, columns, curve_frame, source: str | None) -> tuple["_TaskArgs", dict]:
        """The chain's arguments as a fit read back from fit.json was made with (its target,
        accuracy column and step-2 options, the record's) on its runs and curves read again, and
        the column mapping that reads the target as the loss."""
        task = record["task"]
        frame, cols, curve_frame = _on_target(data, columns, curve_frame, record["target"], source)
        opts = task.get("step2_options") or task.get("step2") or {}     # older files: the fitted step 2's
        s2 = Step2Options(**{k: opts[k] for k in ("smooth", "skip", "ceiling_point", "chance") if k in opts})
        return cls(frame, cols.get("run", "run"), curve_frame, record["target"], task.get("accuracy"), s2), cols


def _step1_of(record: dict, table: RunTable, opts: FitOptions) -> tasklaw.Step1 | None:
    """Approach 3 of the record, on the same runs, as the chain's step 1 (its law, intervals and
    resamples: one fit, one interval), or None where the record has no plain approach 3 to reuse
    (not fitted, or the data-constrained law of repeated data): the chain then fits its own."""
    a3 = record.get("approach3")
    if not isinstance(a3, dict) or "data_constrained" in a3:
        return None
    boot = a3.get("bootstrap") or {}
    samples = np.asarray(boot.get("samples") or [], float).reshape(-1, 5)
    rows = boot.get("rows") or []
    draws = approach3_draws(table.df.height, opts)[rows] if opts.n_boot and len(rows) else \
        np.zeros((0, table.df.height))
    if len(draws) != len(samples):
        return None
    return tasklaw.Step1({k: float(a3[k]) for k in LAW_KEYS}, float(a3["objective"]), samples, draws,
                         ci={k: (a3.get("ci") or {}).get(k, [None, None]) for k in LAW_KEYS}, from_approach3=True)


# What a loss-like target changes: the LM loss's own columns no longer describe it.
_LOSS_ONLY = ("loss_se", "loss_denoise", "loss_clm")


def _on_target(data, columns, curve_frame, target: str, source: str | None):
    """The runs (and curves) with `target` as the loss every approach fits: the column checked,
    the LM loss's standard error and copy-gap columns left out (they describe `loss`)."""
    frame, where = as_frame(data)
    where = source or where
    if target not in frame.columns:
        tasks = sorted({c for c in frame.columns if tasklaw.TASK_COLUMN.match(c)})
        raise UserError(f"target {target!r}: no such column in {where}; "
                        + (f"task columns are: {', '.join(tasks)}" if tasks else "it has no task.<name>.* columns"))
    tasklaw.check_loss_column(frame, target, where, "target")
    cols = column_mapping(columns)
    if "loss" in cols:
        raise UserError(f"target {target!r} and a loss column mapping ({cols['loss']!r}) both name the loss: give one")
    cols["loss"] = target
    frame = frame.drop([c for c in _LOSS_ONLY if c in frame.columns])
    if curve_frame is not None:
        if target not in curve_frame.columns:
            raise UserError(f"target {target!r}: the curves table has no such column (step 2 and approach 1 read "
                            "every validation point's task loss from it)")
        curve_frame = curve_frame.drop([c for c in ("loss",) + _LOSS_ONLY if c in curve_frame.columns]) \
            .with_columns(pl.col(target).alias("loss"))
    return frame, cols, curve_frame


def _chain(table: RunTable, frame: pl.DataFrame, run_col: str, curve_frame, target: str, accuracy: str | None,
           step2, opts: FitOptions, step1: tasklaw.Step1 | None = None) -> dict:
    """The two-step law's record: step 2 on the curves' points (on the runs' final rows,
    `frame`, with a warning, where there are no curves)."""
    acc = accuracy or tasklaw.accuracy_column(target)
    s2 = step2 or tasklaw.Step2Options()
    runs = table.df.select("run", "params", "tokens", "loss")
    points, source, notes = None, "curves", []
    if acc is not None:
        if curve_frame is not None and acc in curve_frame.columns:
            points = tasklaw.step2_points(curve_frame.with_columns(pl.col("run").cast(pl.Utf8)), "loss", acc, s2)
        elif acc in frame.columns:
            ids = frame[run_col].cast(pl.Utf8) if run_col in frame.columns else \
                pl.Series([str(i) for i in range(frame.height)])     # load_runs' ids for a table without them
            points, source = pl.DataFrame({"run": ids, "loss": frame[target].cast(pl.Float64),
                                           "acc": frame[acc].cast(pl.Float64)}), "final rows"
            notes.append(f"task {tasklaw.task_name(target) or target}: step 2 on the runs' final rows only (no "
                         f"curves with {acc}): the paper fits every validation point")
        elif accuracy is not None:
            raise UserError(f"accuracy {accuracy!r}: no such column in the runs or their curves")
        else:
            acc = None
    rec = tasklaw.fit_chain(runs, points, target=target, accuracy=acc, n_boot=opts.n_boot, seed=opts.seed,
                            method=opts.method, refine=opts.refine, step2=s2, points_from=source, step1=step1)
    rec["warnings"] = notes + rec["warnings"]
    return rec


def _options(options: FitOptions | None, given: dict) -> FitOptions:
    """FitOptions from an object and/or keyword arguments; the API's defaults: no bar, and
    named approaches are explicit."""
    names = {f.name for f in fields(FitOptions)}
    for k in given:
        if k not in names:
            hint = f" (the CLI's --{k.replace('_', '-')} is {_FLAG_NAMES[k]!r} here)" if k in _FLAG_NAMES else ""
            raise TypeError(f"scaling.fit: unknown option {k!r}{hint}; options are: {', '.join(sorted(names))}")
    base = options or FitOptions(progress=False)
    given = dict(given)
    if "approaches" in given:
        a = given["approaches"]
        given["approaches"] = tuple(sorted({int(a)} if isinstance(a, (int, np.integer)) else {int(k) for k in a}))
        if not given["approaches"] or any(k not in (1, 2, 3) for k in given["approaches"]):
            raise UserError(f"approaches: expected some of 1, 2, 3, got {a!r}")
        given.setdefault("explicit", True)
    if "fixed" in given:
        given["fixed"] = dict(given["fixed"] or {})
    return replace(base, **given)


def _options_of(record: dict) -> FitOptions:
    """The options a record was fitted with, as far as it says (for refits of a fit read back)."""
    a2, a3 = record.get("approach2") or {}, record.get("approach3") or {}
    stated = (a3.get("flop_count") or {}).get("source") == "stated"     # a count the user gave is kept
    return FitOptions(approaches=tuple(k for k in (1, 2, 3) if f"approach{k}" in record) or (1, 2, 3),
                      n_boot=int(record.get("bootstrap") or 0), seed=int(record.get("seed") or 0),
                      holdout_top=int((record.get("holdout") or {}).get("k", 0)), rollout="rollout" in record,
                      method=a3.get("method", "vp"), fixed=dict(a3.get("fixed") or {}),
                      profile=a2.get("profile_method", "local"), progress=False,
                      flops=compute.count_of(record) if stated else None)


def _optimum(record: dict, p, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N_opt, D_opt and the loss there, of the law p (a dict, or bootstrap rows [S, 5]) at
    training compute C, under the FLOP count the fit's record was derived under
    (`scaling.fit.compute`, exact at every N). The one seam of the FLOP convention: every
    optimum of a `Fit` goes through here."""
    return compute.optimal(p, c, compute.count_of(record))


def _check_level(level: float) -> float:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise UserError(f"interval level {level!r}: expected a number between 0 and 1, e.g. 0.95")
    return float(level)


def _percentiles(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile of the finite samples along axis 0 (NaN where none):
    `scaling.base.intervals.CI` at 0.95, so the 95% interval is the project's one."""
    q = CI if level == 0.95 else (50 * (1 - level), 50 * (1 + level))
    s = np.where(np.isfinite(samples), samples, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # a column with no finite sample: NaN
        lo, hi = np.nanpercentile(s, q, axis=0)
    return lo, hi


def _interval_columns(key: str, ys: np.ndarray | None, size: int, level: float | None) -> dict:
    """{key_lower, key_upper}: the level percentiles of the samples ys [S, size], or nulls."""
    if ys is None:
        return {f"{key}_lower": pl.Series([None] * size, dtype=pl.Float64),
                f"{key}_upper": pl.Series([None] * size, dtype=pl.Float64)}
    lo, hi = _percentiles(np.asarray(ys, float), level)
    return {f"{key}_lower": lo, f"{key}_upper": hi}


def _f(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


class Fit:
    """A fit of Chinchilla's approaches to a table of runs: `scaling.fit(...)` makes one,
    `Fit.from_json(path)` reads one back. `record` is the fit record (fit.json), `table` the
    cleaned runs (`scaling.fit.table.RunTable`; None for a fit read without its runs), `curves`
    the loss curves Approach 1 used (or None), `options` how it was fitted.

    One piece: the object a notebook holds, read top to bottom as its API table
    (docs/fitting-in-a-notebook.md); each method is short, reads the record or refits through
    `fit_all`, and the private helpers at the end serve them."""

    def __init__(self, record: dict, table: RunTable | None = None, curves: pl.DataFrame | None = None,
                 options: FitOptions | None = None):
        self.record = record
        self.table = table
        self.curves = curves
        self.options = options or _options_of(record)
        self._cache: dict = {}
        self._task_args: _TaskArgs | None = None

    # --------------------------------------------------------------------- what it holds

    @property
    def approaches(self) -> tuple:
        """The approaches fitted (1, 2, 3), in order."""
        return tuple(k for k in (1, 2, 3) if isinstance(self.record.get(f"approach{k}"), dict))

    @property
    def warnings(self) -> list[str]:
        """Every warning of the fit: the table's, each approach's, the held-out check's."""
        out = list(self.record.get("warnings") or [])
        for k in self.approaches:
            out += self.record[f"approach{k}"].get("warnings") or []
        out += (self.record.get("holdout_budget") or {}).get("warnings") or []
        return out

    @property
    def runs(self) -> pl.DataFrame:
        """The runs fitted, in canonical columns (params, tokens, loss, flops, run, ...)."""
        return self._need_table("its runs").df

    @property
    def budgets(self) -> list[float]:
        """The runs' compute budgets, smallest first: the budget column, or the runs' FLOPs in
        0.1-dex groups (as Approach 2 groups them)."""
        return [float(v) for v in sorted(self._budget_groups()[1])]

    @property
    def edges(self) -> list[Edge]:
        """The budgets whose lowest loss is at an edge of their sizes, smallest first: each an
        `Edge` (budget, side "smallest"/"largest", n_edge, add: the sizes to add, move, line());
        empty when every budget's minimum is interior. `scaling sweep extend` writes the runs."""
        if "edges" in self.record:
            return [Edge.from_dict(e) for e in self.record["edges"]]
        return edges_of_table(self._need_table("its runs"))   # a fit.json written before edges were recorded

    @property
    def law(self) -> dict:
        """Approach 3's L(N, D) = E + A/N^alpha + B/D^beta: {E, A, B, alpha, beta}."""
        a3 = self._a3()
        return {k: float(a3[k]) for k in LAW_KEYS}

    @property
    def samples(self) -> pl.DataFrame:
        """Approach 3's bootstrap refits (the non-degenerate ones), one row each: E, A, B,
        alpha, beta. Empty without a bootstrap."""
        s = self._law_samples()
        return pl.DataFrame(s if len(s) else np.zeros((0, 5)), schema=list(LAW_KEYS), orient="row")

    # --------------------------------------------------------------------- numbers

    @property
    def params(self) -> pl.DataFrame:
        """The fitted values, one row per parameter per approach: columns approach (1, 2, 3),
        name, value. Approach 3: E, A, B, alpha, beta, then a, b, G (N_opt = G (C/k)^a) and
        tokens_per_param (D/N at the largest compute of the runs), and R_star_D, R_star_N on
        repeated data; approaches 1 and 2: a, k_N, b, k_D (N_opt = k_N C^a, D_opt = k_D C^b)."""
        return self.conf_int(None)

    def conf_int(self, level: float | None = 0.95) -> pl.DataFrame:
        """`params` with the bootstrap's percentile interval at `level` (columns lower, upper;
        null without a bootstrap). At 0.95 these are the record's own intervals, the numbers
        `summary()` prints; at another level they are read off the same bootstrap samples."""
        if level is not None:
            level = _check_level(level)
        rows = []
        for k in self.approaches:
            rec = self.record[f"approach{k}"]
            names = self._names(k)
            lo = hi = None
            if level is not None and (level != 0.95 or any(self._record_ci(rec, x) is None for x in names)):
                samples = self._cached(("samples", k), lambda k=k: self._estimates(k))
                if samples is not None and len(samples) >= 2:
                    lo, hi = _percentiles(samples, level)
            for i, name in enumerate(names):
                row = {"approach": k, "name": name, "value": _f(self._value(rec, name))}
                if level is not None:
                    ci = self._record_ci(rec, name) if level == 0.95 else None
                    if ci is not None:
                        row["lower"], row["upper"] = _f(ci[0]), _f(ci[1])
                    else:
                        row["lower"], row["upper"] = (_f(lo[i]), _f(hi[i])) if lo is not None else (None, None)
                rows.append(row)
        schema = {"approach": pl.Int64, "name": pl.Utf8, "value": pl.Float64}
        if level is not None:
            schema |= {"lower": pl.Float64, "upper": pl.Float64}
        return pl.DataFrame(rows, schema=schema)

    def summary(self) -> str:
        """The text `scaling fit` prints: approach 3's law with intervals, every approach's
        allocation, the held-out checks, the rollout table, the warnings."""
        return format_fit(self.record)

    def predict(self, N, D, interval: float | None = 0.95) -> pl.DataFrame:
        """Approach 3's loss L(N, D) at parameters N and tokens D (numbers or arrays,
        broadcast against each other), one row per point: params, tokens, loss (the point
        fit's law), and loss_lower, loss_upper (the `interval` percentiles of the bootstrap's
        laws at that point; null without a bootstrap or with interval=None). On repeated
        data this is the base law: each token seen once."""
        p = self.law
        n, d = (a.ravel() for a in np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float)))
        if np.any(~(n > 0)) or np.any(~(d > 0)):
            raise UserError("predict: N and D must be positive numbers")
        out = {"params": n, "tokens": d, "loss": law.predict_loss(p, n, d)}
        s = self._samples_for(interval)
        ys = law.predict_loss({k: s[:, i:i + 1] for i, k in enumerate(LAW_KEYS)}, n[None, :], d[None, :]) \
            if s is not None else None
        out |= _interval_columns("loss", ys, n.size, interval)
        return pl.DataFrame(out)

    def optimal(self, C, interval: float | None = 0.95) -> pl.DataFrame:
        """The compute-optimal model at training compute C (FLOPs; a number or an array), by
        Approach 3's law under the fit's FLOP count: one row per C with compute, params and
        tokens (N_opt, D_opt) and loss (L at them), each with _lower and _upper, the
        `interval` percentiles over the bootstrap's laws (null without a bootstrap)."""
        p = self.law
        c = np.asarray(C, float).ravel()
        if np.any(~(c > 0)):
            raise UserError("optimal: the compute C must be positive FLOPs")
        n, d, loss = _optimum(self.record, p, c)
        out = {"compute": c, "params": n, "tokens": d, "loss": loss}
        s = self._samples_for(interval)
        # Every bootstrap law's optimum over all of C at once: N, D, L each [S, len(C)].
        ys = None if s is None else _optimum(self.record, s, c)
        for i, key in enumerate(("params", "tokens", "loss")):
            out |= _interval_columns(key, None if ys is None else ys[i], c.size, interval)
        return pl.DataFrame({k: out[k] for k in ("compute", "params", "params_lower", "params_upper", "tokens",
                                                  "tokens_lower", "tokens_upper", "loss", "loss_lower",
                                                  "loss_upper")})

    @property
    def task(self) -> dict | None:
        """The two-step task law's record (`target=` a task loss): step1 (the law of the task
        loss), step2 (the sigmoid of accuracy, or `refused` with the reason), bootstrap."""
        return self.record.get("task")

    def predict_task(self, N, D, interval: float | None = 0.95) -> pl.DataFrame:
        """The chain at (N, D) (numbers or arrays): task_loss by step 1, accuracy by step 2 at
        that loss (null where step 2 was refused), each with _lower and _upper, the `interval`
        percentiles over the joint bootstrap of both steps."""
        if not self.task:
            raise UserError("predict_task: this fit has no task chain; fit with target='task.<name>.bpb'")
        n, d = (np.asarray(v, float).ravel() for v in (N, D))
        if n.size != d.size and 1 not in (n.size, d.size):
            raise UserError(f"predict_task: N and D differ in length ({n.size} and {d.size})")
        if np.any(~(n > 0)) or np.any(~(d > 0)):
            raise UserError("predict_task: N and D must be positive numbers")
        out = tasklaw.predict_chain(self.task, n, d, _check_level(interval) if interval is not None else 0.95)
        df = pl.DataFrame(out).fill_nan(None)
        if interval is None:
            df = df.select("params", "tokens", "task_loss", "accuracy")
        return df

    # --------------------------------------------------------------------- refits and checks

    def without(self, budgets=None, runs=None) -> "Fit":
        """The same fit (same options, same seed) on the runs left when the given compute
        budgets (FLOPs, as in `budgets`; 1e20 matches the budget within 0.05 dex) and run ids
        are taken out."""
        keep = np.ones(self._need_table("its runs, to refit without some").df.height, bool)
        said = []
        if budgets is not None:
            labels, values = self._budget_groups()
            for b in np.atleast_1d(np.asarray(budgets, float)):
                g = np.flatnonzero(np.abs(np.log10(values / b)) < 0.05) if b > 0 else []
                if not len(g):
                    raise UserError(f"without: no budget {b:.3g}; the budgets are "
                                    + ", ".join(f"{v:.3g}" for v in sorted(values)))
                keep &= labels != g[0]
                said.append(f"{b:.3g}")
        if runs is not None:
            ids = self.table.df["run"].cast(pl.Utf8)
            wanted = [str(r) for r in ([runs] if isinstance(runs, str) else runs)]
            unknown = [r for r in wanted if r not in set(ids.to_list())]
            if unknown:
                raise UserError(f"without: no run {', '.join(map(repr, unknown[:5]))} in the table")
            keep &= ~ids.is_in(wanted).to_numpy()
            said.append(f"{len(wanted)} run(s)")
        return self._refit(keep, "without " + ", ".join(said) if said else "")

    def where(self, mask) -> "Fit":
        """The same fit on the runs where `mask` holds: a polars expression over the canonical
        columns (`pl.col("params") > 1e6`) or a boolean array, one value per run of `runs`."""
        df = self._need_table("its runs, to refit on some").df
        if isinstance(mask, pl.Expr):
            try:
                m = df.select(mask.alias("_keep"))["_keep"]
            except Exception as e:   # polars names the column or the type it could not use
                raise UserError(f"where: cannot evaluate {mask} on the runs ({type(e).__name__}: "
                                f"{(str(e).splitlines() or [''])[0]}); columns are: {', '.join(df.columns)}") from None
            label = f"where {mask}"
        else:
            m, label = pl.Series(np.asarray(mask)), "where a mask"
        if m.dtype != pl.Boolean or m.len() != df.height:
            raise UserError(f"where: expected one true/false per run ({df.height}), got {m.len()} of {m.dtype}")
        return self._refit(m.fill_null(False).to_numpy(), label)

    def holdout(self, top: int | None = None) -> pl.DataFrame:
        """The held-out check as a table of the held-out runs (run, params, tokens, loss,
        predicted, rel_error): Approach 3 refitted without the largest budget predicts that
        budget's runs (the record's holdout_budget, made here if the fit skipped it), or, with
        top=K, without the K largest-compute runs (`--holdout-top K`)."""
        if top is not None:
            h = self.record.get("holdout") if (self.record.get("holdout") or {}).get("k") == top else None
            if h is None:
                h = self._cached(("holdout", top), lambda: holdout(self._need_table("its runs"), top, self.options))
            return pl.DataFrame(h["runs"])
        hb = self.record.get("holdout_budget") or self._cached(
            "holdout_budget", lambda: holdout_budget(self._need_table("its runs"), replace(self.options,
                                                                                          approaches=(3,))))
        if hb is None:
            raise UserError("holdout: the runs have fewer than 3 budgets: there is no largest one to hold out")
        if not hb.get("approach3"):
            raise UserError("holdout: approach 3 was not refitted without the largest budget: "
                            + "; ".join(hb.get("warnings") or ["no approach 3"]))
        return pl.DataFrame(hb["approach3"]["runs"])

    def rollout(self) -> pl.DataFrame:
        """Leave-future-out (`scaling fit --rollout`): for each k, approaches 3 and 2 fitted on
        the k smallest budgets predict every larger one; one row per (k, budget predicted),
        nested results flattened (approach3_mean_abs_rel_error, approach2_rel_error, ...)."""
        r = self.record.get("rollout") or self._cached("rollout", self._rollout)
        return pl.json_normalize(r["steps"], separator="_") if r["steps"] else pl.DataFrame()

    @property
    def plot(self):
        """The figures of this fit (`scaling.figures.accessor.FitPlots`): fit.plot.frontier(),
        .isoflop(), .contours(), .residuals(), .loss_curves(), .heldout(), .all(); each a
        plotly Figure. Loaded when first asked for (plotly is not needed to fit)."""
        return importlib.import_module(PLOTS_MODULE).FitPlots(self)

    # --------------------------------------------------------------------- the file

    def to_json(self, path: str | Path | None = None):
        """The record as fit.json: written to `path` (returns the Path), or returned as a
        JSON string when no path is given (what `scaling fit --json` prints)."""
        if path is None:
            return json.dumps(self.record)
        atomic_write_json(Path(path), self.record)
        return Path(path)

    @classmethod
    def from_json(cls, path: str | Path, data=None, columns=None) -> "Fit":
        """A fit read back from fit.json (`to_json`, `scaling fit --out`). Its runs are read
        from `data` (a path or a DataFrame, with `columns`), else from the file the record
        names as its source where that still exists; without them, the numbers, `summary()`,
        `predict` and `optimal` work, and refits and run figures say what they miss."""
        record = read_fit_file(path)
        if not any(isinstance(record.get(f"approach{k}"), dict) for k in (1, 2, 3)):
            raise UserError(f"{path}: not a fit file from `scaling fit --out` (no approach1, approach2 or approach3)")
        source = data if data is not None else record.get("source")
        table = curves = task_args = None
        if data is not None or (isinstance(source, str) and (Path(source).is_file() or olmo.is_ladder(source))):
            from_curves = bool((record.get("approach1") or {}).get("from_curves"))
            frame, curve_frame, name = _read_source(source, None, from_curves or bool(record.get("task")))
            cols = column_mapping(columns)
            if record.get("params_column", "params") != "params":
                cols.setdefault("params", record["params_column"])
            if record.get("task"):     # the chain's columns and options, so that a refit refits it too
                task_args, cols = _TaskArgs.of_record(record, frame, cols, curve_frame, name)
                frame, curve_frame = task_args.frame, task_args.curves
            elif record.get("target"):     # a fit of another column than the loss reads that column back
                cols.setdefault("loss", record["target"])
            table = load_runs(frame, cols)
            if name is not None:
                table.source = name
            if curve_frame is not None and from_curves:
                curves = load_curves(curve_frame, table)
        f = cls(record, table, curves)
        f._task_args = task_args
        if table is not None and table.df.height != record.get("n_runs"):
            warnings.warn(f"{path} was fitted on {record.get('n_runs')} runs; {table.source} now holds "
                          f"{table.df.height} usable runs (refit with scaling.fit)", FitWarning, stacklevel=2)
        f._warn()
        return f

    def __repr__(self) -> str:
        r = self.record
        boot = f"{r.get('bootstrap')} bootstrap resamples" if r.get("bootstrap") else "no bootstrap"
        lines = [f"<scaling.fit.Fit: {r.get('n_runs')} runs from {r.get('source')}, N from "
                 f"{r.get('params_column')!r}; {boot}>"]

        def _v(rec, k, digits=4):
            lo, hi = ((rec.get("ci") or {}).get(k) or [None, None])
            x = rec.get(k)
            s = "-" if x is None else f"{x:.{digits}g}"
            return s + ("" if lo is None else f" [{lo:.3g}, {hi:.3g}]")
        for k in reversed(self.approaches):
            rec = r[f"approach{k}"]
            head = f"  approach {k}: "
            if k == 3:
                head += (f"L = {rec['E']:.4g} + {rec['A']:.4g}/N^{rec['alpha']:.4g} + {rec['B']:.4g}/D^{rec['beta']:.4g}"
                         f"; alpha {_v(rec, 'alpha')}, beta {_v(rec, 'beta')}; ")
            lines.append(head + f"a {_v(rec, 'a')}, b {_v(rec, 'b')}")
        n = len(self.warnings)
        lines.append(f"  {n} warning(s) in .warnings; .summary() for the full text" if n else
                     "  .summary() for the full text")
        return "\n".join(lines)

    # --------------------------------------------------------------------- inside

    def _warn(self) -> None:
        """Raise each of the fit's warnings (they stay in the record), pointing at the caller's
        line rather than at this package."""
        here = str(Path(__file__).resolve().parents[1])
        frame, level = sys._getframe(0), 1
        while frame is not None and frame.f_code.co_filename.startswith(here):
            frame, level = frame.f_back, level + 1
        for w in self.warnings:
            warnings.warn(w, FitWarning, stacklevel=level)

    def _need_table(self, what: str) -> RunTable:
        if self.table is None:
            raise UserError(f"this fit was read without its runs; it needs {what}: "
                            "Fit.from_json(path, data=RESULTS, columns=...)")
        return self.table

    def _a3(self) -> dict:
        a3 = self.record.get("approach3")
        if not isinstance(a3, dict):
            raise UserError("this fit has no approach 3 (the law L(N, D)); fit with approaches=(3,) to see why")
        return a3

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _law_samples(self) -> np.ndarray:
        s = ((self._a3().get("bootstrap") or {}).get("samples")) or []
        return np.asarray(s, float).reshape(-1, 5)

    def _budget_groups(self) -> tuple[np.ndarray, np.ndarray]:
        t = self._need_table("its runs")
        return isoflop.group_budgets(t.col("flops"), t.col("budget") if t.has("budget") else None)

    def _samples_for(self, interval) -> np.ndarray | None:
        """Approach 3's bootstrap laws [S, 5] for an interval, or None (no interval asked, or
        fewer than 2 samples)."""
        if interval is None:
            return None
        _check_level(interval)
        s = self._law_samples()
        return s if len(s) >= 2 else None

    @staticmethod
    def _record_ci(rec: dict, name: str) -> list | None:
        """The record's own 95% interval of `name` (R* under data_constrained), or None."""
        ci = (rec.get("ci") or {}).get(name)
        return ci if ci is not None else ((rec.get("data_constrained") or {}).get("ci") or {}).get(name)

    def _value(self, rec: dict, name: str):
        if name in REPEAT_KEYS:
            return (rec.get("data_constrained") or {}).get(name)
        return rec.get(name)

    def _names(self, k: int) -> tuple:
        """The names of an approach's rows in `params`."""
        if k != 3:
            return POWER_KEYS
        return LAW_KEYS + DERIVED_KEYS + (REPEAT_KEYS if "data_constrained" in self.record["approach3"] else ())

    def _estimates(self, k: int) -> np.ndarray | None:
        """An approach's bootstrap samples of each of its `_names` [S, names] (None without)."""
        rec = self.record[f"approach{k}"]
        if k != 3:
            s = np.asarray((rec.get("bootstrap") or {}).get("samples") or [], float).reshape(-1, 4)
            keys = tuple((rec.get("bootstrap") or {}).get("keys") or POWER_KEYS)
            return s[:, [keys.index(x) for x in POWER_KEYS]] if len(s) else None
        s = self._law_samples()
        if not len(s):
            return None
        c_ref = float(rec.get("c_ref") or self.record["range"]["flops"][1])
        # a, b, G and D/N of every sample, as the record's are derived (scaling/fit/compute.py)
        dv = compute.derived(s, c_ref, compute.count_of(self.record))
        out = np.c_[s, np.column_stack([dv[k] for k in DERIVED_KEYS])]
        if "data_constrained" in rec:   # R* samples are not kept in the record: no other level
            out = np.c_[out, np.full((len(out), 2), np.nan)]
        return out

    def _refit(self, keep: np.ndarray, label: str) -> "Fit":
        t = self._need_table("its runs")
        df = t.df.filter(pl.Series(keep))
        if df.height == 0:
            raise UserError(f"{label}: no runs left")
        table = RunTable(df=df, source=f"{t.source} ({label})" if label else t.source, params_column=t.params_column,
                         flops_from_6nd=t.flops_from_6nd, warnings=list(t.warnings), dropped=t.dropped, hint=t.hint)
        curves = None if self.curves is None else self.curves.filter(pl.col("run").is_in(df["run"].to_list()))
        if self.task and self._task_args is None:
            raise UserError(f"{label or 'refit'}: this fit's task chain ({self.record.get('target')}) cannot be "
                            "refitted without its runs' task columns: Fit.from_json(path, data=RESULTS)")
        record = fit_all(table, curves if curves is not None and curves.height else None, self.options)
        if self.record.get("target"):     # every approach still fits the target, not the LM loss
            record["target"] = self.record["target"]
        if self._task_args is not None:     # the chain on the runs kept (the step-2 points are filtered by run)
            self._task_args.add_to(record, table, self.options)
        f = Fit(record, table, curves, self.options)
        f._task_args = self._task_args
        f._warn()
        return f

    def _rollout(self) -> dict:
        t, o = self._need_table("its runs"), self.options
        return rollout(t.col("params"), t.col("tokens"), t.col("flops"), t.col("loss"),
                       t.col("budget") if t.has("budget") else None,
                       approaches=tuple(k for k in o.approaches if k in (2, 3)) or (2, 3), fixed=o.fixed,
                       refine=o.refine, method=o.method, profile=o.profile)
