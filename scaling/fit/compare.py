"""Recipes compared: how much compute one recipe needs to match another's compute-optimal loss.

`compare(sources, metric=...)` fits Approach 3's law L(N, D) to each sweep on one yardstick
column (a loss every run was scored on, whatever it trained on: `bpb_clm` by default, causal-LM
bits per byte on the same held-out text) and reads off, at each training compute C:

- each recipe's frontier L*(C) = min over N of L(N, C / FLOPs per token), under the sweep's
  own FLOP count (`scaling.fit.compute`: an encoder-decoder and a decoder-only model of one N
  cost different FLOPs per token);
- the compute-equivalence multiplier k(C) of recipe B against the reference A (the first
  sweep): L*_B(k C) = L*_A(C). k > 1: B needs k times A's compute to reach A's loss, A is
  ahead; k < 1: B is ahead;
- the ratio of their compute-optimal N and D at the same C.

Each with a 95% bootstrap interval: every sweep's runs are resampled within that sweep (its
own fit's bootstrap), and resample j of A is paired with resample j of B (independent draws,
so any pairing is one). An interval that holds 1 reads "no difference".

    import scaling
    cmp = scaling.compare(["runs/demo-cpu", "runs/demo-clm"], metric="bpb_clm",
                          columns={"params": "params_nonembed"}, plan_compute=1e15)
    cmp.multiplier          # recipe, compute, k, k_lower, k_upper, verdict, ...
    cmp.optimal             # recipe, compute, params, tokens, loss with intervals, ratios to A
    print(cmp.summary())    # what `scaling compare` prints
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from scaling.base.errors import UserError
from scaling.base.intervals import CI
from scaling.fit import compute, law
from scaling.fit.compare_text import format_comparison
from scaling.fit.result import Fit, FitWarning, fit as fit_runs
from scaling.fit.table import as_frame, column_mapping
from scaling.fit.tasklaw import check_loss_column

RESULTS_FILE = "results.parquet"       # what `scaling sweep collect` writes in a sweep directory
DEFAULT_METRIC = "bpb_clm"
# Where the data a sweep trained and was scored on is named, most specific first: two sweeps
# that differ in any of these were not scored on the same tokens.
DATA_COLUMNS = ("data_key", "tokenizer_sha256", "tokenizer", "vocab_size")
LOG_K_MAX = 4.0             # |log10 k| searched: beyond 1e4 x the compute, "more than 1e4"
GRID_DEX = 0.1              # the frontier tabulated every 0.1 decade of compute, then interpolated
RANGE_POINTS = 25           # computes across the runs' range (figure and tables)
N_BOOT = 400


@dataclass
class Recipe:
    """One sweep of the comparison: its name, where it was read from, the metric column it was
    fitted on, and its `Fit` (Approach 3 with bootstrap)."""

    name: str
    source: str
    column: str
    fit: Fit

    @property
    def count(self):
        return compute.count_of(self.fit.record)

    @property
    def flops(self) -> list[float]:
        return list(self.fit.record["range"]["flops"])

    def samples(self) -> np.ndarray:
        """The bootstrap's laws [S, 5] (E, A, B, alpha, beta), degenerate ones already left out."""
        return self.fit.samples.to_numpy()


def is_bpb(metric: str) -> bool:
    """Whether a metric column is in bits per byte (comparable across tokenizers and data):
    bpb, bpb_clm, val_bpb_clm, task.<name>.bpb ..."""
    return "bpb" in metric.lower()


def resolve_metric(df: pl.DataFrame, metric: str, where: str) -> str:
    """The column of `df` that holds `metric`: the name itself, or the results table's name of a
    run record's metric (val_bpb_clm -> bpb_clm, val_loss -> loss) and back. A UserError naming
    the table and the loss columns it has when there is none."""
    for name in (metric, metric.removeprefix("val_"), f"val_{metric}"):
        if name in df.columns:
            check_loss_column(df, name, where, "--metric")
            return name
    have = [c for c in df.columns if "loss" in c or "bpb" in c]
    raise UserError(f"{where}: no column {metric!r} (--metric); its loss columns are: {', '.join(have) or '(none)'}")


def _name_of(df: pl.DataFrame, source, index: int) -> str:
    if "sweep" in df.columns:
        names = df["sweep"].drop_nulls().unique().to_list()
        if len(names) == 1:
            return str(names[0])
    if isinstance(source, (str, Path)):
        p = Path(source)
        return p.name if p.is_dir() else (p.parent.name if p.name == RESULTS_FILE else p.stem)
    return f"sweep {index + 1}"


def _read(source, index: int) -> tuple[pl.DataFrame, str, str]:
    """(table, name for messages, recipe name) of a sweep directory, a results file or a DataFrame."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        path = Path(source) / RESULTS_FILE
        if not path.exists():
            raise UserError(f"{source}: no {RESULTS_FILE} in this directory (write it with "
                            f"`scaling sweep collect {source}`)")
        source = path
    df, where = as_frame(source)
    return df, where, _name_of(df, source, index)


def _data_identity(df: pl.DataFrame) -> tuple | None:
    """The data a table's runs were scored on, as far as its columns say (None: they do not)."""
    for col in DATA_COLUMNS:
        if col in df.columns:
            vals = sorted({str(v) for v in df[col].drop_nulls().to_list()})
            if vals:
                return col, tuple(vals)
    return None


def check_same_data(tables: list[tuple[str, pl.DataFrame]], metric: str) -> str | None:
    """A metric in nats (per token) compares sweeps only on the same data and tokenizer: a
    UserError where their data differ; a warning (returned) where the tables do not say."""
    if is_bpb(metric):
        return None
    ids = [(name, _data_identity(df)) for name, df in tables]
    known = [(n, i) for n, i in ids if i is not None]
    for n, i in known[1:]:
        first_name, first = known[0]
        if i != first:
            raise UserError(f"--metric {metric} is in nats per token, but {first_name} and {n} were trained on different "
                            f"data ({first[0]} {', '.join(first[1])} against {i[0]} {', '.join(i[1])}): compare them "
                            "in bits per byte (e.g. --metric bpb_clm)")
    if len(known) < len(ids):
        return (f"--metric {metric} is in nats per token: the tables do not all say which data and tokenizer their runs "
                "used, so nothing checked that they are the same (bits per byte, e.g. bpb_clm, compare across both)")
    return None


def fit_recipe(df: pl.DataFrame, where: str, name: str, metric: str, columns: dict, n_boot: int,
               seed: int) -> Recipe:
    """Approach 3 with its bootstrap on one sweep's `metric` column; a sweep too small for the
    law is a UserError naming it."""
    column = resolve_metric(df, metric, where)
    cols = {**columns, "loss": column}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)   # kept in the record, shown by the summary
            f = fit_runs(df, cols, invalid="drop", approaches=(3,), holdout_budget=False, n_boot=n_boot, seed=seed)
    except UserError as e:
        raise UserError(f"{name} ({where}): {e}") from None
    f.table.source = where
    f.record["source"] = where
    if len(f.samples) < 2 and n_boot:
        raise UserError(f"{name} ({where}): every bootstrap fit of the law on {column} was degenerate: these runs do "
                        "not pin the law down, and there is no interval to compare")
    return Recipe(name, where, column, f)


def _too_few(df: pl.DataFrame, where: str, name: str, columns: dict, column: str) -> None:
    """A sweep with too few completed runs scored on the metric for the 5-parameter law: one
    line naming it (a decoder-only sweep has no denoising score, for one)."""
    n_col = columns.get("params", "params")
    if n_col not in df.columns:
        return   # the fit names the missing column
    ok = df.filter(pl.col("status") == "completed") if "status" in df.columns else df
    scored = ok.filter(pl.col(column).cast(pl.Float64, strict=False).is_finite().fill_null(False))
    if ok.height and not scored.height:
        raise UserError(f"{name} ({where}): none of its {ok.height} completed runs has a value in column {column!r}: "
                        "these runs were not scored on it (choose another --metric)")
    why = law.too_few(scored[n_col].drop_nulls().cast(pl.Float64).to_numpy())
    if why:
        raise UserError(f"{name} ({where}) has too few runs scored on {column} for a law: {why}")


# ----------------------------------------------------------------------------- the math

def frontier_loss(rows: np.ndarray, c: np.ndarray, count) -> np.ndarray:
    """L*(C) of laws rows [S, 5] at computes c [G]: [S, G]."""
    return compute.optimal(rows, c, count)[2]


def _grid(computes: np.ndarray) -> np.ndarray:
    """log10 C of the tabulated frontier: every GRID_DEX within LOG_K_MAX decades of any compute asked."""
    lc = np.log10(computes)
    pts = np.concatenate([np.arange(x - LOG_K_MAX - GRID_DEX, x + LOG_K_MAX + 2 * GRID_DEX, GRID_DEX) for x in lc])
    return np.unique(np.round(pts / GRID_DEX) * GRID_DEX)


def compute_to_reach(rows: np.ndarray, count, targets: np.ndarray, computes: np.ndarray) -> np.ndarray:
    """log10 of the compute at which each law of rows [S, 5] reaches targets [S, T] on its
    frontier (targets near the computes [T] asked): log L* - E falls smoothly with log C (a
    straight line under a power-law count), so it is interpolated in those coordinates between
    frontier points GRID_DEX apart. +inf where the target is at or below the law's E (no compute
    reaches it) or beyond LOG_K_MAX decades above; -inf where it is reached LOG_K_MAX decades below."""
    g = _grid(computes)
    lstar = frontier_loss(rows, 10.0 ** g, count)                       # [S, G]
    e = rows[:, 0:1]
    with np.errstate(all="ignore"):
        y = np.log(lstar - e)                                           # falls with g
        z = np.log(targets - e)
    out = np.full(targets.shape, np.nan)
    for s in range(len(rows)):
        ok = np.isfinite(y[s])
        ys, gs = y[s][ok][::-1], g[ok][::-1]                            # ys rising, gs falling
        keep = np.r_[True, np.diff(ys) > 0]                             # np.interp needs it strictly so
        ys, gs = ys[keep], gs[keep]
        if len(ys) < 2:
            continue
        zs = z[s]
        val = np.interp(zs, ys, gs)
        val[~np.isfinite(zs) | (zs < ys[0])] = np.inf                   # below the frontier's reach
        val[np.isfinite(zs) & (zs > ys[-1])] = -np.inf                  # reached before the grid starts
        out[s] = val
    return out


def log_multiplier(a_rows: np.ndarray, a_count, b_rows: np.ndarray, b_count, c: np.ndarray) -> np.ndarray:
    """log10 k(C) [S, len(c)]: B's compute to reach A's frontier loss at C, over C; row s pairs
    law s of A with law s of B. Clipped to +-(LOG_K_MAX + 1) beyond the searched range."""
    targets = frontier_loss(a_rows, c, a_count)
    lk = compute_to_reach(b_rows, b_count, targets, c) - np.log10(c)[None, :]
    # Beyond the grid's reach, and a target below B's E: +-inf, kept ordered for percentiles.
    return np.clip(lk, -(LOG_K_MAX + 1), LOG_K_MAX + 1)


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The project's 95% percentile interval of each column of samples [S, T] (NaN ignored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(samples, CI, axis=0)
    return lo, hi


def verdict(ref: str, name: str, lo: float, hi: float) -> str:
    """In words: which recipe is ahead, or "no difference" when the interval of k holds 1."""
    if lo > 1:
        return f"{ref} ahead"
    if hi < 1:
        return f"{name} ahead"
    return "no difference"


# ----------------------------------------------------------------------------- the comparison

def computes_of(recipes: list[Recipe], plan_compute: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The computes reported, and which of them lie within the runs' range: RANGE_POINTS across
    the range every sweep covers (all sweeps' together where they share none), then on to the
    plan's compute, 4 a decade."""
    lo, hi = max(r.flops[0] for r in recipes), min(r.flops[1] for r in recipes)
    if not lo < hi:
        lo, hi = min(r.flops[0] for r in recipes), max(r.flops[1] for r in recipes)
    c = np.geomspace(lo, hi, RANGE_POINTS)
    if plan_compute is not None:
        if not (isinstance(plan_compute, (int, float)) and plan_compute > 0):
            raise UserError(f"--plan-compute {plan_compute!r}: expected positive FLOPs, e.g. 1e21")
        gap = abs(math.log10(plan_compute / (hi if plan_compute > hi else lo)))
        c = np.unique(np.r_[c, np.geomspace(hi if plan_compute > hi else lo, plan_compute, max(2, int(4 * gap) + 1))])
    return c, (c >= lo * (1 - 1e-9)) & (c <= hi * (1 + 1e-9))


def _optimum_rows(r: Recipe, c: np.ndarray, m: int) -> tuple[dict, list[np.ndarray]]:
    """A recipe's compute-optimal N, D, L at c (point law) and the first m bootstrap laws' [m, len(c)]."""
    n, d, loss = compute.optimal(r.fit.law, c, r.count)
    s = compute.optimal(r.samples()[:m], c, r.count)
    return {"params": n, "tokens": d, "loss": loss}, list(s)


def _recipe_rows(ref: Recipe, r: Recipe, c: np.ndarray, in_range: np.ndarray, m: int, optima: dict) -> list[dict]:
    """One row per compute of recipe r against the reference: its optimum with intervals and,
    for r other than the reference, k(C) and the ratios of N_opt and D_opt with intervals.
    optima: each recipe's `_optimum_rows`, computed once."""
    point, boot = optima[r.name]
    cols = {"recipe": [r.name] * len(c), "compute": c, "in_range": in_range}
    for i, key in enumerate(("params", "tokens", "loss")):
        lo, hi = _interval(boot[i])
        cols |= {key: point[key], f"{key}_lower": lo, f"{key}_upper": hi}
    if r is not ref:
        p_ref, b_ref = optima[ref.name]
        a_pt = np.array([[ref.fit.law[k] for k in law.PARAMS]])
        b_pt = np.array([[r.fit.law[k] for k in law.PARAMS]])
        lk = log_multiplier(a_pt, ref.count, b_pt, r.count, c)[0]
        lo, hi = _interval(log_multiplier(ref.samples()[:m], ref.count, r.samples()[:m], r.count, c))
        needed = c * 10.0 ** lk
        cols |= {"k": 10.0 ** lk, "k_lower": 10.0 ** lo, "k_upper": 10.0 ** hi, "k_beyond": np.abs(lk) >= LOG_K_MAX,
                 "compute_needed": needed,
                 "compute_needed_in_range": (needed >= r.flops[0] * 0.999) & (needed <= r.flops[1] * 1.001)}
        for i, key in enumerate(("params", "tokens")):
            lo, hi = _interval(boot[i] / b_ref[i])
            cols |= {f"{key}_ratio": point[key] / p_ref[key], f"{key}_ratio_lower": lo, f"{key}_ratio_upper": hi}
        cols["verdict"] = [verdict(ref.name, r.name, a, b) for a, b in zip(cols["k_lower"], cols["k_upper"])]
    return pl.DataFrame(cols).to_dicts()


def _recipe_record(r: Recipe) -> dict:
    rec = r.fit.record
    a3 = rec["approach3"]
    return {"name": r.name, "source": r.source, "column": r.column, "n_runs": rec["n_runs"],
            "n_sizes": a3.get("n_sizes"), "params_column": rec["params_column"], "range": rec["range"],
            "law": r.fit.law, "ci": {k: a3["ci"].get(k) for k in law.PARAMS}, "flop_count": a3["flop_count"],
            "degenerate": a3.get("degenerate"), "n_samples": len(r.fit.samples), "warnings": r.fit.warnings}


def build(recipes: list[Recipe], metric: str, plan_compute: float | None = None, n_boot: int = N_BOOT,
          seed: int = 0, notes: list | None = None) -> dict:
    """The comparison's record (a plain dict, what `scaling compare --json` prints) of fitted
    recipes, the first the reference."""
    c, in_range = computes_of(recipes, plan_compute)
    m = min(len(r.fit.samples) for r in recipes)
    ref = recipes[0]
    optima = {r.name: _optimum_rows(r, c, m) for r in recipes}
    rows = [row for r in recipes for row in _recipe_rows(ref, r, c, in_range, m, optima)]
    return {"metric": metric, "reference": ref.name, "bootstrap": n_boot, "paired_samples": m, "seed": seed,
            "plan_compute": plan_compute, "recipes": [_recipe_record(r) for r in recipes],
            "rows": rows, "notes": list(notes or [])}


class Comparison:
    """The recipes compared (`scaling.compare(...)` makes one): `record` is the plain dict
    (`scaling compare --json`), `recipes` each sweep's name, source and `Fit`. Answers in
    polars DataFrames; `summary()` is what `scaling compare` prints."""

    def __init__(self, record: dict, recipes: list[Recipe]):
        self.record = record
        self.recipes = recipes

    @property
    def table(self) -> pl.DataFrame:
        """Every row: recipe, compute, in_range, its optimum (params, tokens, loss with _lower,
        _upper) and, against the reference, k (with k_lower, k_upper), the N and D ratios, verdict."""
        return pl.DataFrame(self.record["rows"], infer_schema_length=None)

    @property
    def multiplier(self) -> pl.DataFrame:
        """k(C) of every recipe against the reference (the first): recipe, compute, in_range, k,
        k_lower, k_upper, k_beyond, compute_needed, verdict."""
        t = self.table.filter(pl.col("recipe") != self.record["reference"])
        return t.select("recipe", "compute", "in_range", "k", "k_lower", "k_upper", "k_beyond", "compute_needed",
                        "compute_needed_in_range", "verdict")

    @property
    def optimal(self) -> pl.DataFrame:
        """Every recipe's compute-optimal N, D and loss at each compute with intervals, and their
        ratios to the reference's (null for the reference)."""
        t = self.table
        keep = ["recipe", "compute", "in_range"] + [f"{k}{x}" for k in ("params", "tokens", "loss")
                                                    for x in ("", "_lower", "_upper")]
        keep += [f"{k}_ratio{x}" for k in ("params", "tokens") for x in ("", "_lower", "_upper")
                 if f"{k}_ratio{x}" in t.columns]
        return t.select(keep)

    def summary(self) -> str:
        return format_comparison(self.record)

    def __repr__(self) -> str:
        names = ", ".join(r.name for r in self.recipes)
        return f"<scaling.compare: {names} on {self.record['metric']}; .summary() for the text>"


def compare(sources, metric: str = DEFAULT_METRIC, *, columns=None, plan_compute: float | None = None,
            n_boot: int = N_BOOT, seed: int = 0, names: list[str] | None = None) -> Comparison:
    """Compare recipes, each a sweep: `sources` are sweep directories, results tables (.parquet,
    .csv) or DataFrames, the first the reference. metric: the yardstick column every run was
    scored on (default bpb_clm; a run record's name such as val_bpb_clm is read as the table's).
    columns: the column mapping for the other columns (e.g. {"params": "params_nonembed"}).
    plan_compute: a compute (FLOPs) to extrapolate to. n_boot, seed: each sweep's bootstrap.
    names: the recipes' names (default: each table's sweep column, else its folder)."""
    if isinstance(sources, (str, Path, pl.DataFrame)):
        sources = [sources]
    sources = list(sources)
    if len(sources) < 2:
        raise UserError(f"compare: give at least 2 sweeps (the first is the reference), got {len(sources)}")
    if names is not None and len(names) != len(sources):
        raise UserError(f"compare: {len(names)} names for {len(sources)} sweeps")
    cols = column_mapping(columns)
    if "loss" in cols:
        raise UserError("compare: the loss column is the metric: give metric=... (--metric), not columns loss=...")
    if not (isinstance(n_boot, int) and n_boot >= 20):
        raise UserError(f"compare: bootstrap {n_boot!r}: the interval needs at least 20 resamples (default {N_BOOT})")
    read = [_read(s, i) for i, s in enumerate(sources)]
    if names is not None:
        read = [(df, where, n) for (df, where, _), n in zip(read, names)]
    seen: dict[str, int] = {}
    for i, (df, where, name) in enumerate(read):   # two sweeps of one name: told apart by their place
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1 or [n for _, _, n in read].count(name) > 1:
            read[i] = (df, where, f"{name} ({i + 1})")
    for df, where, name in read:
        _too_few(df, where, name, cols, resolve_metric(df, metric, where))
    notes = [check_same_data([(name, df) for df, _, name in read], metric), _own_mix(read, metric)]
    recipes = [fit_recipe(df, where, name, metric, cols, n_boot, seed + i) for i, (df, where, name) in enumerate(read)]
    return Comparison(build(recipes, metric, plan_compute, n_boot, seed, [n for n in notes if n]), recipes)


def _own_mix(read: list, metric: str) -> str | None:
    """A note where the metric is each run's own training mix (loss, bpb) and the sweeps' mixes
    differ: then the sweeps measure different things, and k compares nothing."""
    if metric.removeprefix("val_") not in ("loss", "bpb"):
        return None
    mixes = {name: tuple(sorted(set(df["clm_ratio"].drop_nulls().to_list()))) for df, _, name in read
             if "clm_ratio" in df.columns}
    if len(set(mixes.values())) > 1:
        return (f"--metric {metric} is each run's loss on its own objective mix, and the sweeps' mixes differ (clm_ratio "
                + ", ".join(f"{n} {'/'.join(map(str, m)) or '?'}" for n, m in mixes.items())
                + "): compare them on one yardstick every run was scored on (bpb_clm, bpb_denoise)")
    return None
