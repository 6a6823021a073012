"""The two-step task law of the OLMo ladder (Bhagia et al. 2024, arXiv 2412.04403), and its chain.

Step 1: a task's loss (bits per byte of the correct answer, column `task.<name>.bpb`) as
L(N, D) = E + A/N^alpha + B/D^beta, fitted on each run's final row exactly as approach 3 fits
the LM loss (scaling/fit/law.py). Step 2: the task's accuracy as a sigmoid of that loss,

    acc(L) = a / (1 + exp(-k (L - L0))) + b,     a in [-1, 0], k >= 0, b in [0, 1],

fitted over every validation point of every run (curves.parquet), so that the ceiling is b
(the limit of accuracy as L -> -inf: approached where k (L0 - L) is large, not reached at L = 0)
and the floor a + b (the limit as L -> +inf). As the paper's code does
(`src/fitting/step2.py`, `src/scaling/utils.py`): the first 10% of each run's points are
skipped, loss and accuracy are smoothed by a moving average of 5 points, and a helper point
(L = 0, acc = 1) pins the ceiling. The chain predicts accuracy at an (N, D) through both
steps; its interval comes from one bootstrap through both: each resample draws runs with
replacement, refits step 1 on their final rows and step 2 on their points. Where the same fit
has approach 3 on the same runs, step 1 is that law and its bootstrap, not a second fit: the
chain refits step 2 on the runs each of approach 3's resamples drew (`Step1`).

A task at chance over the whole ladder (its accuracy does not fall as its loss falls) is
refused in the record, with the reason, rather than fitted: a sigmoid through noise would
predict anything.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from scaling.base.errors import UserError
from scaling.base.intervals import percentile_interval
from scaling.fit import law

# The stable names the runs write (issue 24): loss and accuracy, encoder-decoder and CLM forms.
TASK_COLUMN = re.compile(r"^task\.(?P<name>.+)\.(?P<kind>bpb|bpb_clm|acc|acc_clm)$")
ACCURACY_OF = {"bpb": "acc", "bpb_clm": "acc_clm"}


def check_loss_column(frame: pl.DataFrame, column: str, where: str, flag: str = "--target") -> None:
    """A column a law L(N, D) may be fitted to: a number per run that falls with compute. An
    accuracy rises (step 2 of a task law fits it), and text is no loss: each is a UserError
    naming the column and, for an accuracy, the task loss to fit instead. The one owner of this
    rule: `scaling fit --target` and `scaling compare --metric` both ask here."""
    m = TASK_COLUMN.match(column)
    if m and m["kind"] not in ACCURACY_OF:
        loss = {"acc": "bpb", "acc_clm": "bpb_clm"}[m["kind"]]
        raise UserError(f"{flag} {column!r} is an accuracy, not a loss: use {flag} task.{m['name']}.{loss} "
                        f"(a task law's step 2 fits {column} as a sigmoid of it: docs/task-laws.md)")
    if frame[column].dtype != pl.Null and not frame[column].dtype.is_numeric():   # all-null: no value, said later
        raise UserError(f"{flag} {column!r} in {where}: a column of {frame[column].dtype}, not a loss (it must be "
                        "a number per run, e.g. a task's task.<name>.bpb)")
SIGMOID_KEYS = ("a", "L0", "k", "b")
# Below this Spearman correlation of accuracy with task loss, accuracy falls as the loss falls:
# the task has left chance somewhere on the ladder. Above it, step 2 would fit noise.
TREND_RHO = -0.3
# With a stated chance level: the best smoothed accuracy must clear it by this much.
CHANCE_MARGIN = 0.02
MIN_POINTS = 8


@dataclass
class Step2Options:
    """How step 2 reads the points, the paper's choices by default: `smooth` (moving average
    over a run's points, 1 = none), `skip` (fraction of each run's first points left out),
    `ceiling_point` (the helper point L = 0, acc = 1), `chance` (the task's chance accuracy,
    e.g. 0.25 for four choices; None: only the trend test)."""

    smooth: int = 5
    skip: float = 0.1
    ceiling_point: bool = True
    chance: float | None = None


def task_name(column: str) -> str | None:
    m = TASK_COLUMN.match(column)
    return m["name"] if m else None


def accuracy_column(target: str) -> str | None:
    """task.x.bpb -> task.x.acc; task.x.bpb_clm -> task.x.acc_clm; None for another column."""
    m = TASK_COLUMN.match(target)
    if not m or m["kind"] not in ACCURACY_OF:
        return None
    return f"task.{m['name']}.{ACCURACY_OF[m['kind']]}"


def sigmoid(p, loss) -> np.ndarray:
    """acc(L) for parameters p (a dict, a vector [4] or rows [S, 4] against loss [1, M])."""
    if isinstance(p, dict):
        p = np.array([p[k] for k in SIGMOID_KEYS])
    p = np.asarray(p, float)
    a, l0, k, b = (p[..., i:i + 1] if p.ndim > 1 else p[i] for i in range(4))
    with np.errstate(over="ignore"):
        return a / (1.0 + np.exp(-k * (np.asarray(loss, float) - l0))) + b


def _sigmoid_curve(x, a, l0, k, b):
    with np.errstate(over="ignore"):     # a steep start: exp overflows to inf, the sigmoid to its floor
        return a / (1.0 + np.exp(-k * (x - l0))) + b


def moving_average(v: np.ndarray, n: int) -> np.ndarray:
    """The paper's moving average: the mean of the last n points, of fewer at the start."""
    c = np.cumsum(np.asarray(v, float))
    if n <= 1:
        return np.asarray(v, float)
    out = c.copy()
    out[n:] = c[n:] - c[:-n]
    k = np.minimum(np.arange(1, len(c) + 1), n)
    return out / k


def step2_points(curves: pl.DataFrame, loss: str, acc: str, opts: Step2Options) -> pl.DataFrame:
    """Step 2's points (run, loss, acc): each run's points in order of tokens, its first
    `skip` fraction left out, then smoothed."""
    out = []
    for (run,), g in curves.sort("tokens").group_by(["run"], maintain_order=True):
        g = g.filter(pl.col(loss).is_finite() & pl.col(acc).is_finite())
        if g.height == 0:
            continue
        g = g.slice(int(math.ceil(opts.skip * g.height)))
        x, y = moving_average(g[loss].to_numpy(), opts.smooth), moving_average(g[acc].to_numpy(), opts.smooth)
        out.append(pl.DataFrame({"run": [str(run)] * len(x), "loss": x, "acc": y}))
    if not out:
        return pl.DataFrame(schema={"run": pl.Utf8, "loss": pl.Float64, "acc": pl.Float64})
    return pl.concat(out)


def at_chance(x: np.ndarray, y: np.ndarray, chance: float | None) -> str | None:
    """Why step 2 has nothing to fit (None when it has): too few points, accuracy that does
    not fall with the task loss, or (with a stated chance level) never clears chance."""
    if len(x) < MIN_POINTS:
        return f"only {len(x)} points with both task loss and accuracy (step 2 needs {MIN_POINTS})"
    span = f"accuracy {np.min(y):.3f} to {np.max(y):.3f} over task loss {np.min(x):.3f} to {np.max(x):.3f}"
    if chance is not None and np.max(y) < chance + CHANCE_MARGIN:
        return (f"the task is at chance over the whole ladder ({span}, never {CHANCE_MARGIN} above chance "
                f"{chance:g}): step 2 has nothing to fit")
    rho = _spearman(x, y)
    if not rho < TREND_RHO:
        return (f"the task is at chance over the whole ladder: its accuracy does not fall as its loss falls "
                f"({span}; Spearman correlation {rho:+.2f}, above {TREND_RHO}): step 2 has nothing to fit")
    return None


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties broken by order: the points are continuous values)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rx, ry = (np.argsort(np.argsort(v)).astype(float) for v in (x, y))
    return float(np.corrcoef(rx, ry)[0, 1])


# Starts of the paper's step-2 code (src/fitting/step2.py), as (a, L0, k, b).
_STARTS = ((None, 0.9, 3.0, 1.0), (-0.7, 0.6, 7.0, 1.0), (-0.7, 1.4, 3.2, 1.0), (-0.09, 0.6, 6.5, 0.1),
           (-0.64, 0.41, 12.7, 1.0))
_BOUNDS = ([-1.0, 0.0, 0.0, 0.0], [0.0, np.inf, np.inf, 1.0])


def fit_sigmoid(x: np.ndarray, y: np.ndarray, opts: Step2Options, starts=None) -> np.ndarray | None:
    """Least-squares sigmoid (scipy's curve_fit, the paper's bounds) from each start, the best
    kept; None when no start converges."""
    # Here, not above: scipy loads only when a step 2 is fitted (`scaling fit` starts without it).
    from scipy.optimize import OptimizeWarning, curve_fit
    if opts.ceiling_point:
        x, y = np.r_[x, 0.0], np.r_[y, 1.0]
    floor = opts.chance if opts.chance is not None else 0.25
    starts = starts if starts is not None else [(floor - 1.0 if s[0] is None else s[0],) + s[1:] for s in _STARTS]
    best, best_sse = None, np.inf
    for p0 in starts:
        p0 = np.clip(np.asarray(p0, float), np.array(_BOUNDS[0]) + 1e-9, np.array(_BOUNDS[1]) - 1e-9)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            try:
                p, _ = curve_fit(_sigmoid_curve, x, y, p0=p0, bounds=_BOUNDS, maxfev=20000)
            except (RuntimeError, ValueError):
                continue
        sse = float(np.sum((_sigmoid_curve(x, *p) - y) ** 2))
        if sse < best_sse:
            best, best_sse = p, sse
    return best


FIGURE_POINTS = 600


def _every(m: int) -> int:
    return max(1, -(-m // FIGURE_POINTS))


@dataclass
class Step1:
    """Step 1 as fitted: the law (E, A, B, alpha, beta), its objective, 95% intervals `ci`
    (None: read off `samples`), and its bootstrap: the kept resamples' laws `samples` [S, 5]
    (law.PARAMS order) and the run multiplicities that drew each, `draws` [S, runs].
    `from_approach3` says it is approach 3's fit of the same runs, reused."""

    params: dict
    objective: float
    samples: np.ndarray
    draws: np.ndarray
    ci: dict | None = None
    warnings: tuple = ()
    from_approach3: bool = False


def fit_step1(n, d, y, *, n_boot: int, seed: int, method: str = "vp", refine: int | None = 256) -> Step1:
    """Step 1 on its own (the fit has no approach 3 on these runs): the law and its bootstrap."""
    data = law.LawData.from_arrays(n, d, y)
    f1 = law.fit(data, method=method, refine=refine)
    w = law.draw_weights(len(n), n_boot, np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3]))
    x1 = law.refit_weighted(data, f1, w) if n_boot else np.zeros((0, 5))
    s1 = np.array([[law.to_params(x)[k] for k in law.PARAMS] for x in x1]).reshape(-1, 5)
    ok = np.all(np.isfinite(s1), axis=1)
    return Step1(dict(f1.params), f1.objective, s1[ok], w[ok], warnings=tuple(f1.warnings))


def fit_chain(runs: pl.DataFrame, points: pl.DataFrame | None, *, target: str, accuracy: str | None,
              n_boot: int, seed: int, method: str = "vp", refine: int | None = 256,
              step2: Step2Options | None = None, points_from: str = "curves", step1: Step1 | None = None) -> dict:
    """Both steps and their joint bootstrap: the record's "task" entry. `runs` holds each run's
    final row (run, params, tokens, loss = the task loss), `points` step 2's points (run, loss,
    acc; `step2_points`), or None without an accuracy column. `step1`: step 1 already fitted on
    these runs, in this order (approach 3's); None: fitted here."""
    s2 = step2 or Step2Options()
    if not (isinstance(s2.smooth, int) and s2.smooth >= 1) or not 0 <= s2.skip < 1 or \
            (s2.chance is not None and not 0 <= s2.chance < 1):
        raise UserError(f"step 2 options: smooth must be a whole number of points >= 1, skip a fraction in [0, 1) "
                        f"and chance an accuracy in [0, 1), got smooth={s2.smooth!r}, skip={s2.skip!r}, "
                        f"chance={s2.chance!r}")
    n, d, y1 = (runs[c].to_numpy().astype(float) for c in ("params", "tokens", "loss"))
    ids = runs["run"].cast(pl.Utf8).to_list()
    why = law.too_few(n)
    if why:
        raise UserError(f"{target}: step 1 cannot be fitted: {why}")
    if step1 is None:
        step1 = fit_step1(n, d, y1, n_boot=n_boot, seed=seed, method=method, refine=refine)
    elif step1.draws.shape[1:] != (len(n),):
        raise ValueError(f"step 1's draws cover {step1.draws.shape[1:]} runs, not the {len(n)} given")
    rec: dict = {"target": target, "name": task_name(target) or target, "accuracy": accuracy,
                 "step1": {**step1.params, "n_runs": len(n), "objective": step1.objective,
                           "from": "approach 3" if step1.from_approach3 else "fitted for the chain",
                           "points": {"run": ids, "params": n.tolist(), "tokens": d.tolist(), "loss": y1.tolist()}},
                 # How step 2 reads its points, kept whether or not it was fitted (a refit reads them back).
                 "step2_options": {"smooth": s2.smooth, "skip": s2.skip, "ceiling_point": s2.ceiling_point,
                                   "chance": s2.chance},
                 "warnings": list(step1.warnings)}
    p2 = None
    if accuracy is None:
        rec["step2"] = {"refused": f"no accuracy column for {target} (step 2 needs task.<name>.acc beside its bpb)"}
    else:
        pts = points.filter(pl.col("run").is_in(ids)) if points is not None else None
        x, y = (pts["loss"].to_numpy(), pts["acc"].to_numpy()) if pts is not None else (np.zeros(0), np.zeros(0))
        refused = at_chance(x, y, s2.chance)
        if refused is None:
            p2 = fit_sigmoid(x, y, s2)
            if p2 is None:
                refused = "the sigmoid did not converge from any start"
        if refused:
            rec["step2"] = {"refused": refused, "n_points": len(x)}
            rec["warnings"].append(f"task {rec['name']}: step 2 not fitted: {refused}")
        else:
            rec["step2"] = {**dict(zip(SIGMOID_KEYS, map(float, p2))), "floor": float(p2[0] + p2[3]),
                            "ceiling": float(p2[3]), "n_points": len(x), "points_from": points_from,
                            "smooth": s2.smooth, "skip": s2.skip, "ceiling_point": s2.ceiling_point,
                            "chance": s2.chance,
                            "rmse": float(np.sqrt(np.mean((sigmoid(p2, x) - y) ** 2))),
                            # Every k-th point, for the figure (fit.json stays small).
                            "points": {"run": pts["run"].gather_every(_every(len(x))).to_list(),
                                       "loss": x[::_every(len(x))].tolist(), "acc": y[::_every(len(x))].tolist()}}
    _bootstrap(rec, step1, ids, pts if p2 is not None else None, p2, s2, n_boot, seed)
    return rec


def _bootstrap(rec: dict, step1: Step1, ids: list, pts, p2, s2: Step2Options, n_boot: int, seed: int) -> None:
    """One resample of the runs feeds both steps: step 1's law of that resample (refitted under
    its multiplicities, by approach 3 or `fit_step1`), step 2 refitted on the drawn runs' points
    (each as often as the run was drawn)."""
    w, s1 = step1.draws, np.asarray(step1.samples, float).reshape(-1, 5)
    s2_rows = []
    if p2 is not None:
        by_run = {r: (g["loss"].to_numpy(), g["acc"].to_numpy())
                  for (r,), g in pts.group_by(["run"], maintain_order=True)}
        for row in w:
            xs = [by_run[r][0] for r, c in zip(ids, row) if r in by_run for _ in range(int(c))]
            ys = [by_run[r][1] for r, c in zip(ids, row) if r in by_run for _ in range(int(c))]
            p = fit_sigmoid(np.concatenate(xs), np.concatenate(ys), s2, starts=[p2]) if xs else None
            s2_rows.append(p if p is not None else np.full(4, np.nan))
    ok = np.all(np.isfinite(s1), axis=1)
    if p2 is not None:
        s2a = np.array(s2_rows).reshape(-1, 4)
        ok &= np.all(np.isfinite(s2a), axis=1)
    rec["bootstrap"] = {"n": n_boot, "seed": seed, "kept": int(ok.sum()),
                        "step1": s1[ok].tolist(), "step2": s2a[ok].tolist() if p2 is not None else []}
    # Step 1's intervals are its own bootstrap's (approach 3's where reused: one interval printed).
    rec["step1"]["ci"] = step1.ci or {k: percentile_interval(s1[:, i]) for i, k in enumerate(law.PARAMS)}
    if p2 is not None:
        rec["step2"]["ci"] = {k: percentile_interval(s2a[ok][:, i]) for i, k in enumerate(SIGMOID_KEYS)}


def predict_chain(rec: dict, n, d, level: float = 0.95) -> dict:
    """The chain at (N, D) (arrays): task_loss and accuracy (None where step 2 was refused),
    each with _lower and _upper, the `level` percentiles over the joint bootstrap."""
    n, d = np.broadcast_arrays(np.asarray(n, float).ravel(), np.asarray(d, float).ravel())
    p1 = rec["step1"]
    loss = law.predict_loss(p1, n, d)
    out = {"params": n, "tokens": d, "task_loss": loss}
    q = (50 * (1 - level), 50 * (1 + level))
    b = rec.get("bootstrap") or {}
    s1 = np.asarray(b.get("step1") or [], float).reshape(-1, 5)
    ls = law.predict_loss({k: s1[:, i:i + 1] for i, k in enumerate(law.PARAMS)}, n[None, :], d[None, :]) \
        if len(s1) >= 2 else None
    out["task_loss_lower"], out["task_loss_upper"] = (np.percentile(ls, q, axis=0) if ls is not None
                                                      else (np.full(n.size, np.nan),) * 2)
    step2 = rec.get("step2") or {}
    if "refused" in step2:
        out["accuracy"] = out["accuracy_lower"] = out["accuracy_upper"] = np.full(n.size, np.nan)
        return out
    out["accuracy"] = sigmoid(step2, loss)
    s2 = np.asarray(b.get("step2") or [], float).reshape(-1, 4)
    if ls is not None and len(s2) == len(ls):
        out["accuracy_lower"], out["accuracy_upper"] = np.percentile(sigmoid(s2, ls), q, axis=0)
    else:
        out["accuracy_lower"] = out["accuracy_upper"] = np.full(n.size, np.nan)
    return out


def chain_lines(rec: dict) -> list[str]:
    """What `scaling fit` prints of the chain."""
    p1, s2 = rec["step1"], rec["step2"]
    ci = p1.get("ci") or {}

    def iv(c, k):
        lo, hi = (c or {}).get(k) or (None, None)
        return "" if lo is None else f" [{lo:.3g}, {hi:.3g}]"
    out = ["", f"Task {rec['name']}: the two-step law (Bhagia et al. 2024)",
           f"  step 1, {rec['target']} on {p1['n_runs']} runs' final rows: L = {p1['E']:.4g} + {p1['A']:.4g}/N^"
           f"{p1['alpha']:.4g} + {p1['B']:.4g}/D^{p1['beta']:.4g}; alpha{iv(ci, 'alpha')}, beta{iv(ci, 'beta')}"]
    if "refused" in s2:
        out.append(f"  step 2, {rec['accuracy'] or 'accuracy'}: not fitted: {s2['refused']}")
    else:
        c2 = s2.get("ci") or {}
        out.append(f"  step 2, {rec['accuracy']} on {s2['n_points']} points ({s2['points_from']}): acc = "
                   f"{s2['a']:.4g} / (1 + exp(-{s2['k']:.4g} (L - {s2['L0']:.4g}))) + {s2['b']:.4g}; floor "
                   f"{s2['floor']:.3f}, ceiling {s2['ceiling']:.3f}{iv(c2, 'b')}, k {s2['k']:.3g}{iv(c2, 'k')}; "
                   f"rmse {s2['rmse']:.4f}")
    b = rec.get("bootstrap") or {}
    if b.get("n"):
        how = ("approach 3's law and its resamples above; step 2 refitted on each" if p1.get("from") == "approach 3"
               else "both steps refitted")
        out.append(f"  chain intervals: {b['kept']} of {b['n']} joint resamples of the runs ({how})")
    return out
