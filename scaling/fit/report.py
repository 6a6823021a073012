"""All three approaches on one table of runs, with bootstrap intervals: the `fit.json` record.

`fit_all` returns a plain dict (the JSON `scaling fit --json` prints and `scaling plan --fit`
reads): one key per approach fitted, each with its parameters, `ci` (95% percentile
intervals, same keys), `n_points` and `warnings`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from scaling.base.errors import UserError
from scaling.base.flops import FlopCount
from scaling.fit import compute, edges, isoflop, law, repeat
from scaling.base.intervals import percentile_interval
from scaling.fit.rollout import rollout
from scaling.fit.table import RunTable

FEW_SIZES_3 = 5         # below this, E, alpha and beta trade off against each other


@dataclass
class FitOptions:
    """How `fit_all` fits a table: every field is a flag of `scaling fit` (named beside it).

    approaches: which of Chinchilla's approaches to fit (--approach); explicit: the user named
    them, so an approach the data refuse is an error, not a skipped warning. n_boot, seed: the
    bootstrap's resamples and seed (--bootstrap, --seed; 0 resamples: no intervals).
    holdout_top: also fit without the K largest-compute runs (--holdout-top); holdout_budget:
    fit without the largest budget and predict it (on unless --no-holdout); rollout: the
    leave-future-out table (--rollout). refine (--full-grid), method (--method), profile
    (--profile), loss_noise (--loss-noise), fixed (--fix) and repeat_stage1 (--repeat-stage1)
    choose how approaches 2 and 3 are fitted; flops: how the runs' compute is counted for
    approach 3's a, b, G and D/N (None: read off the table; scaling/fit/compute.py); progress: a
    bar on a terminal.
    `scaling.fit(data, **options)` takes these same names."""

    approaches: tuple = (1, 2, 3)
    explicit: bool = False       # the user named the approaches: refusals are errors
    n_boot: int = 1000
    seed: int = 0
    holdout_top: int = 0
    holdout_budget: bool = True  # fit without the largest budget and predict its runs
    refine: int | None = 256     # see law.fit_law; None = run all 4,500 starts
    progress: bool = True
    rollout: bool = False        # leave-future-out over the budgets (scaling.fit.rollout)
    method: str = "vp"           # approach 3: variable projection, or "grid" (Chinchilla's starts)
    profile: str = "local"       # approach 2's profile minimum: local | parabola | akima (isoflop.py)
    loss_noise: float | None = None  # approach 2's bootstrap: relative seed noise added to each loss
    fixed: dict = field(default_factory=dict)   # approach 3 parameters held, e.g. {"E": 1.69}
    repeat_stage1: str = "unpenalised"          # repeated data: which runs fit the base law (repeat.py)
    # How the runs' compute is counted (scaling/fit/compute.py): None reads it off the table (the
    # encoder-decoder formula for the lab's runs, 6ND for a foreign table); a FlopCount, its
    # record or a string ('6nd', '8*N^1', 'encdec:vocab=260,seq_len=32') states it.
    flops: FlopCount | dict | str | None = None


def _ci(samples: np.ndarray) -> list:
    return percentile_interval(samples, 2)


class _Bar:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and total > 0:
            from tqdm import tqdm   # here, not above: only a bar on a terminal needs it
            self.bar = tqdm(total=total, desc="bootstrap", unit="fit", leave=False)

    def __call__(self, k: int):
        if self.bar is not None:
            self.bar.update(k)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _refuse(opts: FitOptions, approach: int, why: str, warnings: list) -> None:
    msg = f"approach {approach}: {why}"
    if opts.explicit:
        raise UserError(msg)
    warnings.append(msg + " (skipped)")


# ----------------------------------------------------------------------------- Approach 1

def approach1(table: RunTable, curves: pl.DataFrame | None, opts: FitOptions, rng, bar) -> dict:
    n, d, c, loss = (table.col(k) for k in ("params", "tokens", "flops", "loss"))
    warnings = []
    if curves is not None:
        runs = []
        params = []
        for (run,), g in curves.group_by(["run"], maintain_order=True):
            g = g.sort("flops")
            runs.append((run, g["flops"].to_numpy(), g["tokens"].to_numpy(), g["loss"].to_numpy()))
            params.append(g["params"][0])
        params = np.array(params, float)
        all_f = curves["flops"].to_numpy()
        grid = np.geomspace(all_f.min(), all_f.max(), isoflop.GRID_POINTS)
        ll, lt = isoflop.curve_matrix(params, runs, grid)

        def env_of(rows):
            return isoflop.envelope_from_matrix(params, grid, ll, lt, rows)
        n_units = len(runs)
        all_sizes = params
    else:
        warnings.append("approach 1: no loss curves (curves.parquet or --curves); using the envelope "
                        "of final points only, a coarse stand-in for Chinchilla's curve envelope")

        def env_of(rows):
            r = np.arange(len(n)) if rows is None else rows
            return isoflop.final_point_frontier(n[r], d[r], c[r], loss[r])
        n_units = len(n)
        all_sizes = n
    try:
        fit = isoflop.fit_envelope(env_of(None), all_sizes)
    except ValueError as e:
        raise _Skip(str(e)) from None
    a_s, b_s, laws = [], [], []
    for _ in range(opts.n_boot):
        rows = np.unique(rng.integers(0, n_units, n_units))
        try:
            f = isoflop.fit_envelope(env_of(rows), all_sizes[rows])
            a_s.append(f.n_law.exponent)
            b_s.append(f.d_law.exponent)
            laws.append(_power_laws(f))
        except ValueError:
            a_s.append(np.nan)
            b_s.append(np.nan)
        bar(1)
    failed = int(np.sum(np.isnan(a_s)))
    if failed:
        warnings.append(f"approach 1: {failed} of {opts.n_boot} bootstrap resamples had too few sizes on the envelope")
    return {
        "a": fit.n_law.exponent, "b": fit.d_law.exponent,
        "k_N": fit.n_law.coef, "k_D": fit.d_law.coef,
        "ci": {"a": _ci(np.array(a_s)), "b": _ci(np.array(b_s))},
        "n_points": n_units, "n_envelope_sizes": fit.n_sizes, "from_curves": curves is not None,
        "envelope": {k: v[:: max(1, len(fit.env.c) // 200)].tolist()
                     for k, v in (("flops", fit.env.c), ("N", fit.env.n), ("D", fit.env.d), ("loss", fit.env.loss))},
        "bootstrap": {"keys": list(POWER_KEYS), "samples": laws},
        "warnings": warnings,
    }


class _Skip(Exception):
    pass


# A bootstrap refit of approaches 1 and 2 is kept as these four numbers, so that a figure can
# draw the band of N_opt(C) = k_N C^a and D_opt(C) = k_D C^b, not only the exponents' intervals.
POWER_KEYS = ("a", "k_N", "b", "k_D")


def _power_laws(f) -> list:
    return [f.n_law.exponent, f.n_law.coef, f.d_law.exponent, f.d_law.coef]


# ----------------------------------------------------------------------------- Approach 2

def approach2(table: RunTable, opts: FitOptions, rng, bar) -> dict:
    n, d, c, loss = (table.col(k) for k in ("params", "tokens", "flops", "loss"))
    budget = table.col("budget") if table.has("budget") else None
    labels, values = isoflop.group_budgets(c, budget)
    sliced = None if isoflop.has_budgets(budget) else _slices(n, labels, len(values))
    if len(values) < 2:
        raise _Skip(f"all runs share one FLOP budget ({values[0]:.3g}); it needs at least 2 budgets "
                    "of at least 3 sizes each")
    try:
        fit = isoflop.fit_isoflop(labels, values, n, d, loss, c, opts.profile)
    except ValueError as e:
        raise _Skip(str(e)) from None
    # Said where the table has a budget column without values (a grid sweep's, from `collect`):
    # a table without the column is sliced by FLOPs as documented, and says so in the record.
    warnings = [sliced] if sliced and budget is not None else []
    warnings += [f"approach 2: budget {p.budget:.3g} FLOPs refused: {p.refused}"
                 for p in fit.profiles if p.refused and p.n_runs >= 3]
    few = sum(1 for p in fit.profiles if p.refused and p.n_runs < 3)
    if few:
        warnings.append(f"approach 2: {few} budget(s) with fewer than 3 runs left out")
    if len(fit.used) == 2:
        warnings.append("approach 2: only 2 budgets have an optimum; the exponents have no degrees of freedom")
    # Resample runs within each budget (a global resample would empty whole budgets), and
    # redraw each resampled run's loss with its noise: a profile's minimum moves with the
    # noise of the runs near it, which resampling alone does not show (Porian et al.).
    groups = [np.flatnonzero(labels == g) for g in range(len(values))]
    if opts.loss_noise is not None:
        sd = opts.loss_noise * loss
        covers = f"runs resampled within each budget, each loss redrawn with {opts.loss_noise:g} relative noise (--loss-noise)"
    elif table.has("loss_se"):
        sd = table.col("loss_se")
        covers = ("runs resampled within each budget, each loss redrawn with its validation standard error "
                  "(loss_se); seed-to-seed noise is not in it (give --loss-noise)")
    else:
        sd = np.zeros_like(loss)
        covers = "runs resampled within each budget; no loss noise (no loss_se column; give --loss-noise)"
    a_s, b_s, laws = [], [], []
    for _ in range(opts.n_boot):
        rows = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        noisy = loss[rows] + sd[rows] * rng.standard_normal(len(rows))
        try:
            f = isoflop.fit_isoflop(labels[rows], values, n[rows], d[rows], noisy, c[rows], opts.profile)
            a_s.append(f.n_law.exponent)
            b_s.append(f.d_law.exponent)
            laws.append(_power_laws(f))
        except (ValueError, np.linalg.LinAlgError):
            a_s.append(np.nan)
            b_s.append(np.nan)
        bar(1)
    failed = int(np.sum(np.isnan(a_s)))
    if failed > 0.1 * max(opts.n_boot, 1):
        warnings.append(f"approach 2: {failed} of {opts.n_boot} bootstrap resamples had fewer than 2 usable budgets")
    return {
        "a": fit.n_law.exponent, "b": fit.d_law.exponent,
        "k_N": fit.n_law.coef, "k_D": fit.d_law.coef,
        "ci": {"a": _ci(np.array(a_s)), "b": _ci(np.array(b_s))},
        "n_points": int(sum(p.n_runs for p in fit.profiles)),
        "n_budgets": len(fit.used), "profile_method": opts.profile, "bootstrap_covers": covers,
        "budgets_from": sliced[len("approach 2: "):] if sliced else "the budget column",
        "bootstrap": {"keys": list(POWER_KEYS), "samples": laws},
        # D_opt is the budget spent at N_opt, with the runs' own FLOPs per token.
        "d_opt_from": "budget / (6 N_opt): the table's FLOPs are 6ND" if table.flops_from_6nd else
                      "budget / (the runs' FLOPs per token at N_opt)",
        "budgets": [{"flops": p.budget, "n_runs": p.n_runs, "N_opt": p.n_opt, "D_opt": p.d_opt,
                     "loss_opt": p.loss_opt, "parabola_logN": list(map(float, p.coef_n)) if p.coef_n else None,
                     "parabola_N_range": list(p.window) if p.window else None,
                     "refused": p.refused,
                     "points": {"N": n[labels == g].tolist(), "loss": loss[labels == g].tolist()}}
                    for g, p in enumerate(fit.profiles)],
        "warnings": warnings,
    }


def _slices(n: np.ndarray, labels: np.ndarray, groups: int) -> str:
    """Runs without a FLOP budget (a grid sweep, a table without the column): approach 2's
    IsoFLOP slices are the runs of equal FLOPs, within a tolerance. The line that says so, or
    a refusal when fewer than 2 slices hold the 3 sizes a profile needs."""
    usable = sum(len(np.unique(n[labels == g])) >= 3 for g in range(groups))
    how = (f"the runs have no FLOP budget (no budget column, or an empty one, as a grid sweep's), so IsoFLOP "
           f"slices are the runs whose FLOPs agree within {isoflop.slice_tolerance()}")
    if usable < 2:
        raise _Skip(f"it needs IsoFLOP budgets: {how}, and {usable} of the {groups} slices hold 3 or more sizes "
                    "(2 are needed); an isoflop sweep (sweep.kind = \"isoflop\") gives every budget its sizes")
    return f"approach 2: {how}: {usable} of {groups} slices hold 3 or more sizes and are fitted"


# ----------------------------------------------------------------------------- Approach 3

def derived(p: dict, c_ref: float, count: FlopCount = compute.SIX_ND) -> dict:
    """a, b, G and D/N of law p at compute c_ref under the FLOP count (scaling/fit/compute.py)."""
    return compute.derived(p, c_ref, count)


def flop_count(table: RunTable, stated=None) -> tuple[FlopCount, dict, list]:
    """The FLOP count of the runs, its fit.json record and warnings (compute.count_for_table)."""
    return compute.count_for_table(table, stated)


def check_law_data(table: RunTable) -> str | None:
    return law.too_few(table.col("params"))


def _run_ids(table: RunTable, mask: np.ndarray) -> list:
    ids = table.df["run"].cast(pl.Utf8).to_list() if table.has("run") else [f"row {k}" for k in range(table.df.height)]
    return [r for r, m in zip(ids, mask) if m]


# Approach 3's parameters and derived quantities, each with its interval in `ci`.
_A3_KEYS = ("E", "A", "B", "alpha", "beta", "a", "b", "G", "tokens_per_param")


@dataclass
class _Runs3:
    """The runs approach 3 is fitted on: their arrays, the FLOP count of the derived quantities,
    whether some runs repeat their data enough to model (`staged`: past MATERIAL_PASSES) and whether
    --fix holds every parameter of the base law (`held`)."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    u: np.ndarray | None
    fpt: tuple                  # the count as k N^e over the runs' own sizes (repeat.py takes a power law)
    staged: bool
    held: bool
    count: FlopCount = field(default_factory=lambda: compute.SIX_ND)   # the FLOP count of the derived quantities

    @property
    def single_epoch(self) -> np.ndarray:
        return self.d <= self.u * (1 + 1e-9)


@dataclass
class _BaseLaw:
    """Stage 1: the plain law L(N, D), the runs it was fitted on, and, when all seven parameters
    were fitted at once (`joint`), R*_D and R*_N of that same fit."""

    fit: law.LawFit
    base: np.ndarray            # bool per run: the runs the base law was fitted on
    rounds: int = 0
    joint: bool = False
    r_star: dict | None = None  # the joint fit's R* (as repeat.fit_r_star returns them)


def _base_law(runs: _Runs3, opts: FitOptions, warnings: list) -> _BaseLaw:
    """The base law: on every run (no repeated data); on the single-epoch runs (every parameter
    held); on the runs repeat.stage1 picks; or jointly with R*_D and R*_N on all runs
    (--repeat-stage1 joint, or where stage 1 alone has too few runs)."""
    n, d, loss = runs.n, runs.d, runs.loss
    everyone = np.ones(len(n), bool)
    if not runs.staged:
        return _BaseLaw(law.fit(law.LawData.from_arrays(n, d, loss), method=opts.method, refine=opts.refine,
                                fixed=opts.fixed), everyone)
    if runs.held:
        base = runs.single_epoch
        if not base.any():
            base = everyone
        return _BaseLaw(law.fit(law.LawData.from_arrays(n[base], d[base], loss[base]), method=opts.method,
                                refine=opts.refine, fixed=opts.fixed), base)
    if opts.repeat_stage1 != "joint":
        try:
            fit, base, rounds, w1, joint = repeat.stage1(n, d, runs.u, loss, mode=opts.repeat_stage1,
                                                         method=opts.method, refine=opts.refine,
                                                         fixed=opts.fixed, fpt=runs.fpt)
        except ValueError as e:
            if opts.repeat_stage1 == "single-epoch":
                raise _Skip(f"repeated data: {e}") from None
            w1, joint = [f"data-constrained stage 1: {e}; all seven parameters are fitted jointly on all runs "
                         "instead"], True
        warnings += [f"approach 3: {w}" for w in w1]
        if not joint:
            return _BaseLaw(fit, base, rounds)
    return _joint_law(runs, opts)


def _joint_law(runs: _Runs3, opts: FitOptions) -> _BaseLaw:
    """All seven parameters on all runs, started from the plain law of the single-epoch runs (of
    all runs where those are too few)."""
    n, d, loss = runs.n, runs.d, runs.loss
    single = runs.single_epoch
    first = single if not law.too_few(n[single]) else np.ones(len(n), bool)
    f1 = law.fit(law.LawData.from_arrays(n[first], d[first], loss[first]), method=opts.method,
                 refine=opts.refine, fixed=opts.fixed)
    xj, fj, cj = repeat.fit_joint(n, d, runs.u, loss, f1.x[None, :], fpt=runs.fpt, fixed=opts.fixed)
    fit = law.LawFit(params=law.to_params(xj[:5]), objective=fj, x=xj[:5], local_optima=xj[None, :5],
                     n_starts=len(repeat.PAPER_STARTS), n_refined=len(repeat.PAPER_STARTS), converged=cj,
                     fixed=dict(opts.fixed))
    r_star = {"R_star_D": float(np.exp(xj[5])), "R_star_N": float(np.exp(xj[6])), "objective": fj, "converged": cj,
              "z": xj[5:], "wider": None}
    return _BaseLaw(fit, np.ones(len(n), bool), 0, joint=True, r_star=r_star)


def _repeat_record(table: RunTable, runs: _Runs3, s1: _BaseLaw, opts: FitOptions,
                   warnings: list) -> tuple[dict, dict]:
    """Stage 2 on repeated data: R*_D and R*_N with the base law held (or the joint fit's), the
    `data_constrained` record (which runs informed each stage), and stage 2's own result."""
    n, d, u, fpt, held, joint = runs.n, runs.d, runs.u, runs.fpt, runs.held, s1.joint
    r = s1.r_star if joint else repeat.fit_r_star(s1.fit.params, n, d, u, runs.loss, fpt=fpt)
    _, r_d, _, r_n = repeat.excess(s1.fit.params, n, d, u, fpt)
    informative = (r_d > 0) | (r_n > 0)
    single = runs.single_epoch
    dc = {"R_star_D": r["R_star_D"], "R_star_N": r["R_star_N"], "objective": r["objective"],
          "converged": r["converged"], "wider": r["wider"],
          "protocol": ("joint: all seven parameters on all runs (too few runs for the base law alone)" if joint
                       else "staged, as Muennighoff et al. (2023) fit it: base law first, then R*_D, R*_N "
                            "with it held"),
          "stage1": {"mode": "held fixed (--fix)" if held else "joint" if joint else opts.repeat_stage1,
                     "n_runs": 0 if held or joint else int(s1.base.sum()),
                     "runs": [] if held or joint else _run_ids(table, s1.base),
                     "rounds": s1.rounds, "n_single_epoch": int(single.sum()),
                     "n_single_epoch_excess_params": int(np.sum(single & (r_n > 0)))},
          "stage2": {"n_runs": len(n), "n_repeated": int(np.sum(r_d > 0)), "n_excess_params": int(np.sum(r_n > 0)),
                     "n_informative": int(informative.sum()), "runs": _run_ids(table, informative)},
          "n_repeated": int(np.sum(r_d > 0))}
    if r["wider"]:
        w = r["wider"]
        warnings.append(f"approach 3: repeated data: from a wider grid of starts, stage 2 reaches a lower objective "
                        f"({w['objective']:.6e} against {r['objective']:.6e}) at R*_D = {w['R_star_D']:.4g}, "
                        f"R*_N = {w['R_star_N']:.4g}; the values reported are those of the paper's starts, and "
                        "the runs do not pin R* down (read the intervals)")
    return dc, r


def _bootstrap_draws(runs: _Runs3, s1: _BaseLaw, r: dict | None, opts: FitOptions, rng, bar):
    """The bootstrap's refits: base-law parameters [B, 5] and, on repeated data, R*_D and R*_N
    [B, 2] (None without)."""
    n, d, u, loss, base = runs.n, runs.d, runs.u, runs.loss, s1.base
    data = law.LawData.from_arrays(n[base], d[base], loss[base])
    if not runs.staged:
        # The generator's first use: `approach3_draws` makes these same draws again for the task chain.
        return law.refit_weighted(data, s1.fit, law.draw_weights(len(n), opts.n_boot, rng), progress=bar), None
    # Runs resampled over the whole table; each resample refits stage 1 on its draws of
    # the stage-1 runs (the set itself is the full fit's) and then stage 2 on all draws.
    m = len(n)
    w_all = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(opts.n_boot)]).astype(float)
    if s1.joint:
        xr = repeat.bootstrap_joint(np.r_[s1.fit.x, r["z"]], n, d, u, loss, w_all, fpt=runs.fpt, fixed=opts.fixed)
        bar(opts.n_boot)
        return xr[:, :5], np.exp(xr[:, 5:])
    if runs.held:
        xs = np.tile(s1.fit.x, (opts.n_boot, 1))
        bar(opts.n_boot)
    else:
        xs = law.refit_weighted(data, s1.fit, w_all[:, base], progress=bar)
    return xs, repeat.bootstrap_r_star(xs, r["z"], n, d, u, loss, w_all, fpt=runs.fpt)


def _add_intervals(out: dict, dc: dict | None, runs: _Runs3, s1: _BaseLaw, xs, rs, opts: FitOptions,
                   c_ref: float, warnings: list) -> None:
    """95% intervals of every key from the bootstrap's non-degenerate refits (and of R* on
    repeated data), the E-alpha trade-off, and the samples themselves (for `scaling plan`)."""
    nb, db = runs.n[s1.base], runs.d[s1.base]
    ps = [law.to_params(x) for x in xs]
    ok = [runs.held or law.degenerate(p, nb, db) is None for p in ps]
    out["bootstrap_degenerate"] = len(ok) - sum(ok)
    if not all(ok):
        warnings.append(f"approach 3: {len(ok) - sum(ok)} of {len(ok)} bootstrap fits were degenerate (a term "
                        "of the law vanished, or an exponent left (0, 3)) and are left out of the intervals")
    if dc is not None:
        good = rs[np.array(ok, bool)]
        dc["ci"] = {"R_star_D": _ci(good[:, 0]), "R_star_N": _ci(good[:, 1])}
        dc["bootstrap_covers"] = ("runs resampled; stage 2 refitted with the base law held" if runs.held else
                                  "runs resampled; all seven parameters refitted jointly" if s1.joint else
                                  "runs resampled over the whole table; stage 1 refitted on each resample's draws "
                                  "of its runs (the set is the full fit's), then stage 2 on all draws")
    kept = [i for i, good in enumerate(ok) if good]
    ps = [ps[i] for i in kept]
    if len(ps) < 2:
        # Kept, not skipped: the user sees the point fit, flagged, with no intervals.
        warnings.append("approach 3: the bootstrap fits are all degenerate: the data do not pin the law "
                        "down and it has no intervals")
        ps, kept = [], []
    # Every sample's a, b, G and D/N at once, under the fit's own FLOP count.
    rows = {k: np.array([p[k] for p in ps], float) for k in law.PARAMS}
    if ps:
        rows.update(compute.derived(np.array([[p[k] for k in law.PARAMS] for p in ps]), c_ref, runs.count))
    out["ci"] = {k: _ci(rows[k]) if ps else [None, None] for k in _A3_KEYS}
    E = np.array([p["E"] for p in ps])
    al = np.array([p["alpha"] for p in ps])
    corr = float(np.corrcoef(E, al)[0, 1]) if len(ps) > 1 and np.std(E) > 0 and np.std(al) > 0 else 0.0
    out["corr_E_alpha"] = corr
    if abs(corr) > 0.95:
        warnings.append(f"approach 3: E and alpha are strongly traded off in the bootstrap "
                        f"(correlation {corr:.2f}); more sizes would separate them")
    out["bootstrap"] = {"n": opts.n_boot, "seed": opts.seed,
                        "samples": [[p[k] for k in law.PARAMS] for p in ps],
                        "rows": kept}     # which resamples the samples are (`approach3_draws`)


def _approach_rng(seed: int, k: int) -> np.random.Generator:
    """Approach k's own generator, so that adding an approach does not change another's intervals."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[k - 1])


def approach3_draws(n_runs: int, opts: FitOptions) -> np.ndarray:
    """The run multiplicities [n_boot, n_runs] of approach 3's bootstrap on runs without repeated
    data (its generator's first use, in `_bootstrap_draws`): the task chain refits step 2 on the
    very resamples approach 3 refitted (scaling/fit/result.py), rather than drawing its own."""
    return law.draw_weights(n_runs, opts.n_boot, _approach_rng(opts.seed, 3))


# Repeated data the law models (a run past this many passes over its unique tokens). Muennighoff
# et al. (2023) find up to about 4 epochs of repeated tokens worth nearly as much as fresh ones:
# below that R*_D cannot be measured, and the staged fit's stage 1 would set aside half an
# IsoFLOP sweep's runs (those with parameters in excess) for nothing.
MATERIAL_PASSES = 4.0


def approach3(table: RunTable, opts: FitOptions, rng, bar) -> dict:
    """Approach 3: the law L(N, D) fitted to every run, its derived allocation, and bootstrap
    intervals. On repeated data (a unique_tokens column, some run past MATERIAL_PASSES over
    it) the data-constrained law of Muennighoff et al., in stages: the base law first
    (`_base_law`), then R*_D and R*_N with it held (`_repeat_record`)."""
    why = check_law_data(table)
    if why:
        raise _Skip(why)
    n, d, loss, c = (table.col(k) for k in ("params", "tokens", "loss", "flops"))
    count, count_rec, count_warnings = flop_count(table, opts.flops)
    u = table.col("unique_tokens") if table.has("unique_tokens") else None
    passes = d / u if u is not None else np.ones(len(d))
    runs = _Runs3(n, d, loss, u, count.power_over(float(n.min()), float(n.max())),
                  staged=_material_repeats(table),
                  held=all(k in opts.fixed for k in law.PARAMS), count=count)
    warnings: list[str] = [f"approach 3: {w}" for w in count_warnings]
    repeats = int(np.sum(passes > 1 + 1e-9))
    if repeats and not runs.staged:
        warnings.append(f"approach 3: {repeats} run(s) repeat their data, at most {passes.max():.2g} passes over it: "
                        f"up to {MATERIAL_PASSES:g}, repeated tokens are worth nearly fresh ones (Muennighoff et al. "
                        f"2023), so the plain law is fitted, repeats counted as tokens; the repeated-data law needs "
                        f"runs past {MATERIAL_PASSES:g} passes")
    s1 = _base_law(runs, opts, warnings)
    fit, nb, db = s1.fit, n[s1.base], d[s1.base]
    warnings += list(fit.warnings)
    why_degenerate = law.degenerate(fit.params, nb, db)
    if why_degenerate:
        warnings.append(f"approach 3: the law is degenerate on these data: {why_degenerate}")
    sizes = len(np.unique(np.round(np.log(nb), 6)))
    if sizes < FEW_SIZES_3 and not runs.held:
        warnings.append(f"approach 3: only {sizes} distinct sizes; E, alpha and beta are traded off against "
                        "each other (read the intervals, not the point values)")
    c_ref = float(c.max())
    note = compute.slopes_note(count, c_ref)
    if not count.is_power:
        count_rec = {**count_rec, "flops_count": f"{count_rec['flops_count']}; {note}"}
    out = {**fit.params, **derived(fit.params, c_ref, count), "c_ref": c_ref, "flop_count": count_rec,
           "slopes": note,
           "objective": fit.objective,
           "degenerate": why_degenerate, "fixed": dict(opts.fixed), "method": opts.method,
           "n_starts": fit.n_starts, "n_refined": fit.n_refined, "converged": fit.converged}
    dc, r = _repeat_record(table, runs, s1, opts, warnings) if runs.staged else (None, None)
    if opts.n_boot > 0:
        xs, rs = _bootstrap_draws(runs, s1, r, opts, rng, bar)
        _add_intervals(out, dc, runs, s1, xs, rs, opts, c_ref, warnings)
    else:
        out["ci"] = {k: [None, None] for k in _A3_KEYS}
        if dc is not None:
            dc["ci"] = {"R_star_D": [None, None], "R_star_N": [None, None]}
    if dc is not None:
        out["data_constrained"] = dc
    out["n_points"] = int(s1.base.sum())
    out["n_sizes"] = sizes
    out["warnings"] = warnings
    return out


def holdout(table: RunTable, k: int, opts: FitOptions) -> dict:
    """Fit Approach 3 on all but the k largest-compute runs; how well does it predict them?"""
    df = table.df.sort("flops")
    if k >= df.height:
        raise UserError(f"--holdout-top {k}: only {df.height} runs")
    train = RunTable(df=df.head(df.height - k), source=table.source, params_column=table.params_column)
    why = check_law_data(train)
    if why:
        raise UserError(f"--holdout-top {k}: the remaining {why}")
    data = law.LawData.from_arrays(train.col("params"), train.col("tokens"), train.col("loss"))
    fit = law.fit(data, method=opts.method, refine=opts.refine, fixed=opts.fixed)
    test = df.tail(k)
    pred = law.predict_loss(fit.params, test["params"].to_numpy(), test["tokens"].to_numpy())
    obs = test["loss"].to_numpy()
    rel = (pred - obs) / obs
    return {
        "k": k, "params": fit.params, "objective": fit.objective,
        "runs": [{"run": r, "params": float(nn), "tokens": float(dd), "flops": float(cc), "loss": float(o),
                  "predicted": float(pp), "rel_error": float(e)}
                 for r, nn, dd, cc, o, pp, e in zip(test["run"], test["params"], test["tokens"],
                                                    test["flops"], obs, pred, rel)],
        "mean_abs_rel_error": float(np.mean(np.abs(rel))),
        "max_abs_rel_error": float(np.max(np.abs(rel))),
    }


# A held-out run this far under its prediction is not noise: at laptop scale it is a run that
# crossed a later transition of the objective (README, "What the demo recovers").
REGIME_GAP = 0.10


def _material_repeats(table: RunTable) -> bool:
    """Whether approach 3 models this table's repeated data (some run past MATERIAL_PASSES)."""
    return table.has("unique_tokens") and bool(np.any(
        table.col("tokens") > table.col("unique_tokens") * MATERIAL_PASSES * (1 + 1e-9)))


def holdout_budget(table: RunTable, opts: FitOptions) -> dict | None:
    """Leave the largest budget out: fit Approaches 3 and 2 on the smaller budgets and predict
    the held-out runs' losses (and Approach 2's N_opt there). None when fewer than 3 budgets."""
    c = table.col("flops")
    labels, values = isoflop.group_budgets(c, table.col("budget") if table.has("budget") else None)
    if len(values) < 3:
        return None
    top = int(np.argmax(values))
    keep = labels != top
    train = RunTable(df=table.df.filter(pl.Series(keep)), source=table.source, params_column=table.params_column)
    test = table.df.filter(pl.Series(~keep))
    train_c = float(c[keep].max())
    out: dict = {"budget": float(values[top]), "n_runs": test.height, "n_train": train.df.height,
                 "train_max_flops": train_c, "extrapolation": float(values[top] / values[labels[keep]].max()),
                 "warnings": [] if not _material_repeats(table) else [
                     "held-out check: the plain law refitted, while approach 3 models the runs' repeated data "
                     f"(past {MATERIAL_PASSES:g} passes): the check is of the plain law"]}
    fit = None
    if 3 in opts.approaches:
        why = check_law_data(train)
        if why:
            out["warnings"].append(f"held-out check: approach 3 not refitted: the remaining {why}")
        else:
            data = law.LawData.from_arrays(train.col("params"), train.col("tokens"), train.col("loss"))
            try:
                fit = law.fit(data, method=opts.method, refine=opts.refine, fixed=opts.fixed)
            except ValueError as e:
                out["warnings"].append(f"held-out check: approach 3 refit failed: {e}")
    if fit is not None:
        pred = law.predict_loss(fit.params, test["params"].to_numpy(), test["tokens"].to_numpy())
        obs = test["loss"].to_numpy()
        rel = (pred - obs) / obs
        out["approach3"] = {
            "params": fit.params, "warnings": fit.warnings,
            "degenerate": law.degenerate(fit.params, train.col("params"), train.col("tokens")),
            "mean_abs_rel_error": float(np.mean(np.abs(rel))), "max_abs_rel_error": float(np.max(np.abs(rel))),
            "min_loss": float(obs.min()), "predicted_min_loss": float(pred[np.argmin(obs)]),
            "runs": [{"run": r, "params": float(nn), "tokens": float(dd), "loss": float(o),
                      "predicted": float(pp), "rel_error": float(e)}
                     for r, nn, dd, o, pp, e in zip(test["run"], test["params"], test["tokens"], obs, pred, rel)],
            "below_law": [r for r, e in zip(test["run"], rel) if e > REGIME_GAP],
        }
    if 2 not in opts.approaches:
        return out
    try:
        full = isoflop.fit_isoflop(labels, values, table.col("params"), table.col("tokens"), table.col("loss"), c,
                                   opts.profile)
        seen = isoflop.fit_isoflop(labels[keep], values, train.col("params"), train.col("tokens"), train.col("loss"),
                                   c[keep], opts.profile)
        observed = full.profiles[top].n_opt
        predicted = float(seen.n_law(values[top]))
        out["approach2"] = {"a": seen.n_law.exponent, "N_opt_predicted": predicted, "N_opt_observed": observed,
                            "rel_error": None if observed is None else float(predicted / observed - 1)}
        if observed is None:
            out["warnings"].append(f"held-out check: approach 2 predicts N_opt {predicted:.3g} at the held-out budget, "
                                   "whose own profile has no interior minimum to compare it with")
    except ValueError as e:
        out["warnings"].append(f"held-out check: approach 2 not refitted: {e}")
    return out


def fit_all(table: RunTable, curves: pl.DataFrame | None = None, opts: FitOptions | None = None) -> dict:
    """Every approach `opts` asks for (and the data allow) on the runs of `table` (and Approach
    1 on the loss curves `curves`, from `load_curves`), with bootstrap intervals and the
    held-out checks: the fit record, a plain dict that is also fit.json (`scaling fit --out`).

    Its keys: source, params_column, n_runs, range (the runs' reach), dropped, flops_from_6ND,
    bootstrap, seed, warnings; approach1 / approach2 / approach3 for each approach fitted (its
    values, `ci` with their 95% intervals, n_points, warnings, the bootstrap's samples);
    holdout_budget, holdout and rollout for the checks asked for; flop_count, how the runs'
    compute is counted (scaling/fit/compute.py), which approach 3's a, b, G and D/N, the plan
    and the figures all use. An approach the data refuse
    is skipped with a warning, or is a UserError when `opts.explicit`; no approach at all is a
    UserError. `scaling.fit(...)` wraps the record in a `scaling.fit.Fit`."""
    opts = opts or FitOptions()
    n, c = table.col("params"), table.col("flops")
    out: dict = {
        "source": table.source, "params_column": table.params_column, "n_runs": table.df.height,
        # The data's reach: a plan beyond these extrapolates, and says by how much.
        "range": {"params": [float(n.min()), float(n.max())], "flops": [float(c.min()), float(c.max())],
                  "tokens": [float(table.col("tokens").min()), float(table.col("tokens").max())]},
        "dropped": table.dropped, "flops_from_6ND": table.flops_from_6nd,
        "bootstrap": opts.n_boot, "seed": opts.seed, "warnings": list(table.warnings),
    }
    if table.flops_from_6nd:
        out["warnings"].append("no flops column: FLOPs taken as 6 N D")
    bar = _Bar(opts.n_boot * len(opts.approaches), opts.progress)
    try:
        for k in sorted(opts.approaches):
            rng = _approach_rng(opts.seed, k)
            try:
                if k == 1:
                    out["approach1"] = approach1(table, curves, opts, rng, bar)
                elif k == 2:
                    out["approach2"] = approach2(table, opts, rng, bar)
                elif k == 3:
                    out["approach3"] = approach3(table, opts, rng, bar)
            except _Skip as e:
                _refuse(opts, k, str(e), out["warnings"])
                bar(opts.n_boot)
        if opts.holdout_top:
            out["holdout"] = holdout(table, opts.holdout_top, opts)
        if opts.holdout_budget:
            hb = holdout_budget(table, opts)
            if hb is not None:
                out["holdout_budget"] = hb
        if opts.rollout:
            out["rollout"] = rollout(n, table.col("tokens"), c, table.col("loss"),
                                     table.col("budget") if table.has("budget") else None,
                                     approaches=tuple(k for k in opts.approaches if k in (2, 3)),
                                     fixed=opts.fixed, refine=opts.refine, method=opts.method, profile=opts.profile)
    finally:
        bar.close()
    # Budgets whose lowest loss is at an edge of their sizes: which way to move them.
    out["edges"] = [e.to_dict() for e in edges.edges_of_table(table)]
    if not any(f"approach{k}" in out for k in (1, 2, 3)):
        raise UserError(f"{table.source}: no approach could be fitted: " + "; ".join(out["warnings"]))
    # How the runs' compute is counted: the one count of approach 3's derived quantities, the
    # plan (`scaling plan --fit`) and the figures (`compute.count_of` reads it back).
    out["flop_count"] = (out["approach3"]["flop_count"] if "approach3" in out
                         else flop_count(table, opts.flops)[1])
    return out


def read_fit_file(path) -> dict:
    """A fit.json written by `scaling fit --out`, as a dict; a missing file, bad JSON or a
    non-object is a UserError naming the path. Callers check the keys they need."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such fit file (write one with `scaling fit RESULTS --out {p}`)")
    try:
        fit = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not a JSON fit file ({e})") from None
    if not isinstance(fit, dict):
        raise UserError(f"{p}: not a fit file (expected a JSON object)")
    return fit


def law_from_fit(fit: dict) -> tuple[dict, np.ndarray | None]:
    """Approach 3's parameters and bootstrap samples [n, 5] (E, A, B, alpha, beta) from a fit.json."""
    a3 = fit.get("approach3")
    if not isinstance(a3, dict) or not all(isinstance(a3.get(k), (int, float)) for k in law.PARAMS):
        raise UserError("fit has no approach3 parameters (E, A, B, alpha, beta); rerun `scaling fit --approach 3`")
    p = {k: float(a3[k]) for k in law.PARAMS}
    if not all(math.isfinite(v) for v in p.values()) or p["E"] <= 0:
        raise UserError("fit's approach3 parameters are not finite positive numbers")
    samples = a3.get("bootstrap", {}).get("samples") if isinstance(a3.get("bootstrap"), dict) else None
    return p, (np.array(samples, float) if samples else None)
