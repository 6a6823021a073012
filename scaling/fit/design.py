"""The next runs of a sweep, chosen by how much each shrinks the interval of one quantity.

Given the runs so far, their Approach 3 law and a compute allowance, `choose` picks runs from a
list of candidate (N, D) points, each costing its training compute C, so that the interval of
the TARGET narrows most:

- `loss-at-plan` (default): log L at the compute-optimal (N, D) of the plan's compute Cp;
- `a`: the frontier's slope d log N_opt / d log C at Cp (constant under 6ND);
- `n_opt`: log N_opt at Cp.

Method (a local, sequential optimal design, as in the design of experiments for nonlinear
regression; docs/design.md says why this one):

1. The law's parameters theta = (a', b', e, alpha, beta) (log A, log B centred on the runs' mean
   log N, log D, as the fit's optimiser uses them) have, to first order, the covariance
   Cov = (J'J / sigma^2 + I / 100)^-1: J the Jacobian of log L at the runs, sigma the fit's
   residual noise in log loss (a robust standard deviation of the runs' residuals), and a weak
   prior (standard deviation 10 in every coordinate) that keeps Cov finite where the runs do not
   yet pin a direction down.
2. The target's variance is the delta method's, g' Cov g, with g its gradient in theta (central
   differences through `scaling.fit.compute.optimal`, so under the fit's own FLOP count).
3. A candidate with Jacobian row j, once run, adds j j' / sigma^2 to the information; by
   Sherman-Morrison the target's variance falls by (g' Cov j)^2 / (sigma^2 + j' Cov j).
   Greedy: take the affordable candidate of the largest fall per FLOP, update Cov, repeat
   until the allowance buys nothing more that helps; the same with the cost counted as
   sqrt(FLOPs) and not at all; keep the pass that ends narrowest (COST_POWERS).

The linearisation is at today's fit: the design is local, and meant to be run again when the
chosen runs come back (the benchmark, bench/bench_design.py, does it in rounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from scaling.base.errors import UserError
from scaling.base.flops import FlopCount
from scaling.fit import compute
from scaling.fit.law import LawData, LawFit, fit_law_vp, to_params
from scaling.fit.table import read_any

TARGETS = ("loss-at-plan", "a", "n_opt")
PRIOR_SD = 10.0          # the weak prior on each centred coordinate (log units)
SIGMA_FLOOR = 1e-4       # residual noise below this (noiseless synthetic runs) is taken as this
FD_STEP = 1e-4           # central-difference step in theta for the target's gradient
Z95 = 1.959964           # a 95% interval is +-1.96 standard deviations (the delta method's)


@dataclass
class Candidates:
    """Runs that could be made: N (in the law's parameter count), D, their training compute C,
    and for each an optional key the caller reads back (a sweep's (budget, size) to write)."""

    n: np.ndarray
    d: np.ndarray
    c: np.ndarray
    keys: list | None = None

    def __post_init__(self):
        self.n, self.d, self.c = (np.asarray(v, float).ravel() for v in (self.n, self.d, self.c))
        if not (len(self.n) == len(self.d) == len(self.c)):
            raise ValueError("candidates: n, d and c must have one entry per candidate")

    def __len__(self) -> int:
        return len(self.n)


@dataclass
class Pick:
    """One chosen run: its index among the candidates, N, D, C, and the target's standard
    deviation once it (and every run chosen before it) is added."""

    index: int
    n: float
    d: float
    c: float
    sd_after: float
    key: object = None


@dataclass
class Design:
    """A design: the target now (its value and sd at today's fit), the runs chosen in order,
    and the sd after them. Half-widths (95%) are in the target's units: log loss, log N_opt or a."""

    target: str
    plan_compute: float
    allowance: float
    value: float                   # the target at today's fit (log L, a or log N_opt)
    sigma: float                   # residual noise in log loss the design assumed
    sd_before: float               # the target's standard deviation from today's runs
    picks: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def spent(self) -> float:
        return float(sum(p.c for p in self.picks))

    @property
    def sd_after(self) -> float:
        return self.picks[-1].sd_after if self.picks else self.sd_before

    def to_dict(self) -> dict:
        """The JSON of `scaling design --json`; `estimate` is the target in its own units (the
        loss, N_opt or a), `value` the quantity the interval is of (log loss, log N_opt, a)."""
        return {"target": self.target, "plan_compute": self.plan_compute, "allowance": self.allowance,
                "spent": self.spent, "value": self.value,
                "estimate": self.value if self.target == "a" else math.exp(self.value), "sigma": self.sigma,
                "half_width_before": Z95 * self.sd_before, "half_width_after": Z95 * self.sd_after,
                "runs": [{"params": p.n, "tokens": p.d, "flops": p.c, "half_width_after": Z95 * p.sd_after}
                         for p in self.picks],
                "notes": list(self.notes)}


# --------------------------------------------------------------------------- the linear model
def _centres(data: LawData) -> tuple[float, float]:
    return float(data.log_n.mean()), float(data.log_d.mean())


def _theta(x: np.ndarray, centres: tuple[float, float]) -> np.ndarray:
    """Internal x = (a, b, e, alpha, beta) -> centred theta (a' = a - alpha mean log N, ...)."""
    t = np.array(x, float, copy=True)
    t[0] -= t[3] * centres[0]
    t[1] -= t[4] * centres[1]
    return t


def _params(theta: np.ndarray, centres: tuple[float, float]) -> dict:
    x = np.array(theta, float, copy=True)
    x[0] += x[3] * centres[0]
    x[1] += x[4] * centres[1]
    return to_params(x)


def jacobian(theta: np.ndarray, log_n, log_d, centres: tuple[float, float]) -> np.ndarray:
    """d log L / d theta at each point [k, 5]: log L = LSE(u1, u2, u3) with u1 = a' - alpha
    (log N - mean), u2 = b' - beta (log D - mean), u3 = e; the softmax of u is the gradient."""
    xn = np.asarray(log_n, float) - centres[0]
    xd = np.asarray(log_d, float) - centres[1]
    u = np.stack([theta[0] - theta[3] * xn, theta[1] - theta[4] * xd, np.full(xn.shape, theta[2])], 1)
    w = np.exp(u - u.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return np.stack([w[:, 0], w[:, 1], w[:, 2], -w[:, 0] * xn, -w[:, 1] * xd], 1)


def residual_sigma(data: LawData, params: dict) -> float:
    """The runs' noise in log loss around the law: 1.4826 x the median absolute residual (a
    standard deviation that a few outliers, which the Huber fit also discounts, do not inflate)."""
    pred = params["E"] + params["A"] * np.exp(-params["alpha"] * data.log_n) + params["B"] * np.exp(-params["beta"] * data.log_d)
    r = np.log(pred) - data.log_l
    return max(SIGMA_FLOOR, 1.4826 * float(np.median(np.abs(r - np.median(r)))))


def target_value(target: str, params: dict, plan_compute: float, count: FlopCount) -> float:
    """The quantity the design narrows, at a law: log L_opt(Cp), a at Cp, or log N_opt(Cp)."""
    if target == "loss-at-plan":
        return float(np.log(compute.optimal(params, plan_compute, count)[2]))
    if target == "n_opt":
        return float(np.log(compute.optimal(params, plan_compute, count)[0]))
    if target == "a":
        return float(compute.derived(params, plan_compute, count)["a"])
    raise UserError(f"--target: expected one of {', '.join(TARGETS)}, got {target!r}")


def target_gradient(target: str, theta: np.ndarray, centres, plan_compute: float, count: FlopCount) -> np.ndarray:
    """d target / d theta by central differences (the optimum under an encoder-decoder count
    has no closed form to differentiate)."""
    g = np.zeros(5)
    for i in range(5):
        hi, lo = theta.copy(), theta.copy()
        hi[i] += FD_STEP
        lo[i] -= FD_STEP
        g[i] = (target_value(target, _params(hi, centres), plan_compute, count)
                - target_value(target, _params(lo, centres), plan_compute, count)) / (2 * FD_STEP)
    if not np.all(np.isfinite(g)):
        raise UserError(f"the fitted law gives no finite {target} at {plan_compute:.3g} FLOPs (a degenerate law?)")
    return g


# --------------------------------------------------------------------------- the greedy choice
# How much a candidate's cost counts in each greedy pass: per FLOP (1), per sqrt(FLOP), not at all
# (0). Per FLOP alone favours many cheap runs and can leave a large, very informative one out;
# taking the best of the passes is the usual remedy for greedy selection under a budget
# (Krause and Guestrin 2005; Leskovec et al. 2007: best of cost-benefit and unit-cost greedy).
COST_POWERS = (1.0, 0.5, 0.0)


def choose(data: LawData, fit: LawFit, candidates: Candidates, allowance: float, *, target: str = "loss-at-plan",
           plan_compute: float, count: FlopCount, sigma: float | None = None) -> Design:
    """The candidates (each at most once) that most shrink the target's variance within
    `allowance` FLOPs in all, in the order taken (see the module's docstring): the best of the
    greedy passes of COST_POWERS."""
    if target not in TARGETS:
        raise UserError(f"--target: expected one of {', '.join(TARGETS)}, got {target!r}")
    centres = _centres(data)
    theta = _theta(fit.x, centres)
    sigma = residual_sigma(data, fit.params) if sigma is None else max(SIGMA_FLOOR, float(sigma))
    J = jacobian(theta, data.log_n, data.log_d, centres)
    cov = np.linalg.inv(J.T @ J / sigma**2 + np.eye(5) / PRIOR_SD**2)
    g = target_gradient(target, theta, centres, plan_compute, count)
    design = Design(target, float(plan_compute), float(allowance),
                    target_value(target, fit.params, plan_compute, count), sigma, math.sqrt(max(g @ cov @ g, 0.0)))
    Jc = jacobian(theta, np.log(candidates.n), np.log(candidates.d), centres)
    passes = [_greedy(cov, g, Jc, candidates.c, allowance, sigma, p) for p in COST_POWERS]
    for i, sd in min(passes, key=lambda picks: picks[-1][1] if picks else design.sd_before):
        design.picks.append(Pick(i, float(candidates.n[i]), float(candidates.d[i]), float(candidates.c[i]), sd,
                                 None if candidates.keys is None else candidates.keys[i]))
    if not design.picks:
        cheapest = float(candidates.c.min()) if len(candidates) else math.nan
        design.notes.append(f"no candidate is both affordable and informative: the cheapest costs {cheapest:.3g} "
                            f"FLOPs against an allowance of {allowance:.3g}")
    return design


def _greedy(cov: np.ndarray, g: np.ndarray, Jc: np.ndarray, cost: np.ndarray, allowance: float, sigma: float,
            power: float) -> list[tuple[int, float]]:
    """One greedy pass: (index, the target's sd after it) of each candidate taken, best fall of
    the variance per cost^power first, while the allowance lasts."""
    left = float(allowance)
    free = np.ones(len(cost), bool)
    out = []
    while True:
        ok = free & (cost <= left)
        if not ok.any():
            break
        cj = Jc @ cov                                  # rows: (Cov j)'
        fall = (cj @ g) ** 2 / (sigma**2 + np.einsum("ij,ij->i", cj, Jc))
        var = float(g @ cov @ g)
        # A fall below 1e-6 of the variance is no reason to spend compute.
        score = np.where(ok & (fall > 1e-6 * var), fall / cost**power, -np.inf)
        i = int(np.argmax(score))
        if not np.isfinite(score[i]):
            break
        v = cj[i]
        cov = cov - np.outer(v, v) / (sigma**2 + v @ Jc[i])
        free[i] = False
        left -= cost[i]
        out.append((i, math.sqrt(max(float(g @ cov @ g), 0.0))))
    return out


# --------------------------------------------------------------------------- candidates
def budgets_between(flops, allowance: float, plan_compute: float, per_decade: int = 4) -> np.ndarray:
    """IsoFLOP budgets from the runs' smallest compute up to the smaller of the plan's compute
    and the allowance (no single run may cost more than either), `per_decade` to a decade."""
    lo = float(np.min(flops))
    hi = min(float(plan_compute), float(allowance))
    if hi < lo:
        raise UserError(f"--compute {allowance:.3g}: less than the smallest run of the table ({lo:.3g} FLOPs); "
                        "no new run fits in it")
    steps = max(1, int(math.ceil(per_decade * math.log10(hi / lo))))
    # Two significant digits, as a person writes a budget (a sweep names its runs by it: the
    # smallest run's own FLOPs, 9.99e10 after whole batches, is the sweep's 1e11); none above hi.
    budgets = np.array([float(f"{b:.2g}") for b in np.geomspace(lo, hi, steps + 1)])
    return np.unique(np.where(budgets > hi, hi, budgets))


def grid_candidates(params: dict, count: FlopCount, budgets: np.ndarray, sizes: int = 7,
                    spread: float = 4.0) -> Candidates:
    """Without a list or a sweep: at each budget `sizes` sizes log-spaced over N_opt / spread ..
    N_opt x spread of today's law, D = C / FLOPs per token (the fit's count)."""
    n_opt = compute.optimal(params, budgets, count)[0]
    factors = spread ** np.linspace(-1, 1, sizes)
    n = (n_opt[:, None] * factors[None, :]).ravel()
    c = np.repeat(budgets, sizes)
    return Candidates(n, c / count.per_token(n), c)


# A candidate within 1% of a run of the table in both N and D is that run: a list built from the
# same sweep, or a sweep's own sizes, round N and D a little differently.
SAME_RUN_RTOL = 0.01


def drop_runs(candidates: Candidates, n, d, rtol: float = SAME_RUN_RTOL) -> tuple[Candidates, int]:
    """The candidates that are not runs of the table already (N and D both within `rtol` of one
    run's), and how many were left out. Choosing a run the fit already holds would spend the
    allowance on a point whose loss is known (a public sweep's) or only re-measured (a new seed)."""
    tol = math.log1p(rtol)
    ln, ld = np.log(np.asarray(n, float)), np.log(np.asarray(d, float))
    same = np.zeros(len(candidates), bool)
    for i, (cn, cd) in enumerate(zip(np.log(candidates.n), np.log(candidates.d))):
        same[i] = bool(np.any((np.abs(ln - cn) <= tol) & (np.abs(ld - cd) <= tol)))
    keep = np.flatnonzero(~same)
    keys = None if candidates.keys is None else [candidates.keys[i] for i in keep]
    return Candidates(candidates.n[keep], candidates.d[keep], candidates.c[keep], keys=keys), int(same.sum())


# A list's columns: the canonical name first, then the short ones a hand-written list may use.
CANDIDATE_COLUMNS = {"params": ("params", "N"), "tokens": ("tokens", "D"), "flops": ("flops", "C")}


def read_candidates(path, count: FlopCount) -> Candidates:
    """Candidates from a CSV or parquet file of N, D and optionally C (columns params, tokens,
    flops, or N, D, C); without C, C = D x the fit's FLOPs per token at N. Any other column (a
    public sweep's known loss) is ignored. A missing column or a value that is not a positive
    number is a UserError naming the file, the column and the row."""
    df = read_any(path)
    cols = {}
    for name, names in CANDIDATE_COLUMNS.items():
        found = next((c for c in names if c in df.columns), None)
        if found is None and name != "flops":
            raise UserError(f"{path}: no {' or '.join(names)} column (a candidate list has N and D, and may have C); "
                            f"its columns: {', '.join(df.columns) or 'none'}")
        if found is not None:
            try:
                v = df[found].cast(float, strict=True).to_numpy()
            except Exception:
                raise UserError(f"{path}: column {found} is not numeric") from None
            bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
            if len(bad):
                raise UserError(f"{path}: column {found}, row {bad[0] + 1}: {float(v[bad[0]])!r} is not a positive number")
            cols[name] = v
    if df.height == 0:
        raise UserError(f"{path}: no candidates (the table is empty)")
    c = cols.get("flops", cols["tokens"] * count.per_token(cols["params"]))
    return Candidates(cols["params"], cols["tokens"], c)


def _width(design: Design, sd: float) -> str:
    # A log target's interval reads as a relative one: +-x% of the loss or of N_opt.
    if design.target == "a":
        return f"+-{Z95 * sd:.4f}"
    return f"+-{100 * math.expm1(Z95 * sd):.2f}%"


def format_design(design: Design) -> str:
    """What `scaling design` prints: the target's interval before and after, then the runs."""
    v = design.value
    what = {"loss-at-plan": f"loss at the plan's optimum = {math.exp(v):.4f}", "a": f"a (d log N_opt / d log C) = {v:.4f}",
            "n_opt": f"N_opt = {math.exp(v):.4g}"}[design.target]
    lines = [f"target: {what} at {design.plan_compute:.3g} FLOPs, 95% interval {_width(design, design.sd_before)} "
             f"from today's runs (delta method; their noise {100 * design.sigma:.2f}% in loss)",
             f"after the {len(design.picks)} run(s) below ({design.spent:.3g} of {design.allowance:.3g} FLOPs): "
             f"{_width(design, design.sd_after)}", ""]
    lines.append(f"{'#':>3}  {'N':>10}  {'D':>10}  {'D/N':>7}  {'C (FLOPs)':>10}  {'interval after':>14}")
    for i, p in enumerate(design.picks, 1):
        lines.append(f"{i:>3}  {p.n:>10.4g}  {p.d:>10.4g}  {p.d / p.n:>7.3g}  {p.c:>10.4g}  {_width(design, p.sd_after):>14}")
    lines += [f"note: {n}" for n in design.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- replay on known losses
def replay(n, d, loss, c, start, allowance: float, *, rounds: int = 4, target: str = "loss-at-plan",
           plan_compute: float, count: FlopCount, fit_fn=None) -> np.ndarray:
    """The design run as a lab would run it, on a table whose every loss is already known (a
    public sweep): fit the runs `start` (indices), choose within a share of the allowance,
    "run" the choice (read its losses), refit, and so on for `rounds` rounds, round k spending
    up to k/rounds of what the start left. Returns the indices of every run used, the start's
    included; their compute is at most `allowance`."""
    fit_fn = fit_fn or fit_law_vp
    n, d, loss, c = (np.asarray(v, float) for v in (n, d, loss, c))
    used = np.zeros(len(n), bool)
    used[np.asarray(start, int)] = True
    base = float(c[used].sum())
    for k in range(1, rounds + 1):
        data = LawData.from_arrays(n[used], d[used], loss[used])
        fit = fit_fn(data)
        free = np.flatnonzero(~used)
        budget = base + (allowance - base) * k / rounds - float(c[used].sum())
        if budget <= 0 or len(free) == 0:
            continue
        picks = choose(data, fit, Candidates(n[free], d[free], c[free]), budget, target=target,
                       plan_compute=plan_compute, count=count).picks
        used[free[[p.index for p in picks]]] = True
    return np.flatnonzero(used)
