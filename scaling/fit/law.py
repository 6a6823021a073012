"""Approach 3: the parametric law L(N, D) = E + A / N^alpha + B / D^beta.

Fitted as Chinchilla did (Hoffmann et al. 2022, appendix D.2) and as the Epoch AI replication
checked (Besiroglu et al. 2024): in log space,

    log L = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,

minimising the SUM over runs of Huber_delta(log L_pred - log L_obs) with delta = 1e-3, by
L-BFGS from a grid of 4,500 starts, keeping the best. The sum matters: a mean divides the
gradient by the number of runs and the optimiser's tolerances then stop it early.

Speed: the 4,500 starts are all scored in one vectorised call; the most promising ones (and
the best per (alpha, beta) cell, so no region of the grid is left unexplored) are then run
to convergence together by the batched L-BFGS of lbfgs.py, with an analytic gradient. The
bootstrap refits all resamples together the same way, each resample a weight vector (how
many times each run was drawn), started from the full fit's distinct local optima.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from scaling.base.allocation import compute_optimal
from scaling.base.flops import FlopCount
from scaling.fit.lbfgs import minimize_batch

HUBER_DELTA = 1e-3
PARAMS = ("E", "A", "B", "alpha", "beta")
# Internal vector order: x = (a, b, e, alpha, beta) with A = e^a, B = e^b, E = e^e.
_SLOT = {"A": 0, "B": 1, "E": 2, "alpha": 3, "beta": 4}


def fixed_slots(fixed: dict | None) -> dict[int, float]:
    """{'E': 1.69} -> {2: log 1.69}: the internal coordinates held at their values."""
    out = {}
    for k, v in (fixed or {}).items():
        if k not in _SLOT:
            raise ValueError(f"unknown law parameter {k!r}; expected one of {', '.join(PARAMS)}")
        if k in ("E", "A", "B"):
            if not v > 0:
                raise ValueError(f"{k} must be positive to be held fixed, got {v}")
            out[_SLOT[k]] = math.log(v)
        else:
            out[_SLOT[k]] = float(v)
    return out


def _holding(f_and_g, slots: dict[int, float]):
    """The objective with some coordinates held: they are reset on every call and get no
    gradient, so the batched L-BFGS moves only the free ones."""
    if not slots:
        return f_and_g
    cols = np.array(list(slots))
    vals = np.array(list(slots.values()))

    def held(x, idx):
        x = x.copy()
        x[:, cols] = vals
        f, g = f_and_g(x, idx)
        g = g.copy()
        g[:, cols] = 0.0
        return f, g
    return held


def _minimize(data: "LawData", x0: np.ndarray, slots: dict[int, float], delta: float,
              weights: np.ndarray | None = None):
    """Batched L-BFGS of the Huber objective from x0 (rows of weights per problem, or None).

    In a - alpha log N, a and alpha are almost collinear (log N ~ 20): the optimiser works on
    centred logs instead (a' = a - alpha mean(log N), likewise b), the same problem, better
    conditioned: on Chinchilla's points the bootstrap's refits take ~35 iterations, not ~64.
    Not done when A or B is held, which fixes a, not a'."""
    x0 = np.array(x0, float, copy=True)
    centre = not ({0, 1} & set(slots))
    mn, md = (float(data.log_n.mean()), float(data.log_d.mean())) if centre else (0.0, 0.0)
    cdata = LawData(data.log_n - mn, data.log_d - md, data.log_l)
    x0[:, 0] -= x0[:, 3] * mn
    x0[:, 1] -= x0[:, 4] * md
    res = minimize_batch(_holding(lambda x, idx: huber_objective(
        x, cdata, None if weights is None else weights[idx], delta), slots), _pin(x0, slots))
    x = _pin(res.x, slots)
    x[:, 0] += x[:, 3] * mn
    x[:, 1] += x[:, 4] * md
    res.x = x
    return res


def _pin(x: np.ndarray, slots: dict[int, float]) -> np.ndarray:
    x = np.array(x, float, copy=True)
    for c, v in slots.items():
        x[:, c] = v
    return x


def chinchilla_grid() -> np.ndarray:
    """The 4,500 starts: alpha, beta in {0, .5, .., 2}; e in {-1, -.5, .., 1}; a, b in {0, 5, .., 25}."""
    alphas = np.arange(0, 2.01, 0.5)
    es = np.arange(-1, 1.01, 0.5)
    ab = np.arange(0, 25.1, 5)
    rows = [(a, b, e, al, be) for al, be, e, a, b in itertools.product(alphas, alphas, es, ab, ab)]
    return np.array(rows, dtype=np.float64)


@dataclass
class LawData:
    """Log inputs of the fit; weights count how often each run is used (bootstrap)."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_l: np.ndarray

    @classmethod
    def from_arrays(cls, params, tokens, loss) -> "LawData":
        return cls(np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float)),
                   np.log(np.asarray(loss, float)))

    def __len__(self) -> int:
        return len(self.log_l)


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber loss of residuals r: quadratic within delta, linear beyond."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def huber_objective(x: np.ndarray, data: LawData, weights: np.ndarray | None = None,
                    delta: float = HUBER_DELTA) -> tuple[np.ndarray, np.ndarray]:
    """Sum of Huber losses and its gradient for k parameter vectors x[k, 5] at once.

    weights: None, [n] or [k, n] (one row of run multiplicities per parameter vector).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        u1 = x[:, 0:1] - x[:, 3:4] * data.log_n
        u2 = x[:, 1:2] - x[:, 4:5] * data.log_d
        u3 = x[:, 2:3]
        m = np.maximum(np.maximum(u1, u2), u3)      # log-sum-exp, shifted for stability
        e1 = np.exp(u1 - m)
        e2 = np.exp(u2 - m)
        e3 = np.exp(u3 - m)
        s = e1 + e2 + e3
        r = m + np.log(s) - data.log_l
        h = huber(r, delta)
        p = np.clip(r, -delta, delta) / s            # Huber'(r) times 1/sum(exp)
        if weights is not None:
            h = h * weights
            p = p * weights
        q1 = p * e1
        q2 = p * e2
        g = np.stack([q1.sum(1), q2.sum(1), (p * e3).sum(1),
                      -(q1 * data.log_n).sum(1), -(q2 * data.log_d).sum(1)], axis=1)
        return h.sum(1), g


def predict_loss(params: dict, n, d) -> np.ndarray:
    """L(N, D) for the law's parameters (dict with E, A, B, alpha, beta)."""
    n = np.asarray(n, float)
    d = np.asarray(d, float)
    with np.errstate(over="ignore"):  # a degenerate law (huge exponent) gives inf terms -> 0
        return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


MIN_RUNS = 8            # 5 parameters; fewer runs leave them unidentified
MIN_SIZES = 3


def too_few(n) -> str | None:
    """Why runs of sizes n cannot pin the law down, or None."""
    n = np.asarray(n, float)
    sizes = len(np.unique(np.round(np.log(n), 6)))
    if len(n) < MIN_RUNS or sizes < MIN_SIZES:
        return (f"{len(n)} runs over {sizes} size(s); the 5-parameter law needs at least "
                f"{MIN_RUNS} runs over at least {MIN_SIZES} sizes")
    return None


VANISHED_SHARE = 1e-3  # a term below this share of the loss at every run is not in the law


def degenerate(p: dict, n, d) -> str | None:
    """Why a fitted law is degenerate on runs (n, d), or None: a parameter that is not finite
    and positive, an exponent outside (0, 3), or a term (E, A/N^alpha, B/D^beta) that is under
    0.1% of the loss at every run, i.e. the fit dropped it (E = 1e-20 is E = 0)."""
    if not all(math.isfinite(p[k]) and p[k] > 0 for k in PARAMS):
        return "a parameter is not a finite positive number"
    if not (0 < p["alpha"] < 3 and 0 < p["beta"] < 3):
        return f"exponent out of (0, 3): alpha {p['alpha']:.3g}, beta {p['beta']:.3g}"
    n, d = np.asarray(n, float), np.asarray(d, float)
    with np.errstate(over="ignore", under="ignore"):
        terms = {"E": np.full(n.shape, p["E"]), "A/N^alpha": p["A"] / n ** p["alpha"], "B/D^beta": p["B"] / d ** p["beta"]}
    total = sum(terms.values())
    gone = [k for k, t in terms.items() if np.max(t / total) < VANISHED_SHARE]
    return f"{', '.join(gone)} vanished (under {VANISHED_SHARE:.1%} of the loss at every run)" if gone else None


def _exp(v: float) -> float:
    # A resample can drive a term's log-coefficient far out (that term vanishes from the
    # law); report it as inf for the caller to drop rather than crash.
    return math.exp(v) if v < 709 else math.inf


def to_params(x: np.ndarray) -> dict:
    a, b, e, alpha, beta = (float(v) for v in x)
    return {"E": _exp(e), "A": _exp(a), "B": _exp(b), "alpha": alpha, "beta": beta}


def from_params(p: dict) -> np.ndarray:
    return np.array([math.log(p["A"]), math.log(p["B"]), math.log(p["E"]), p["alpha"], p["beta"]])


SIX_ND = (6.0, 1.0)    # FLOPs per token = k N^e; Chinchilla's C = 6 N D


def _power(fpt) -> tuple[float, float]:
    """(k, e) of a power-law count given as a tuple or a power-law FlopCount."""
    if isinstance(fpt, FlopCount):
        if not fpt.is_power:
            raise ValueError("the encoder-decoder FLOP count has no constant a, b, G: use "
                             "scaling.fit.compute.derived(p, c_ref, count) for the slopes at a compute")
        return float(fpt.k), float(fpt.e)
    return float(fpt[0]), float(fpt[1])


def frontier(p: dict, fpt=SIX_ND) -> dict:
    """Compute-optimal allocation when C = D * k N^e (FLOPs per token k N^e; 6ND is k=6, e=1).

    Minimising E + A N^-alpha + B (C / (k N^e))^-beta over N: N_opt = G (C/k)^a and
    D_opt = (C/k) / N_opt^e, with a = beta / (alpha + e beta), b = 1 - e a and
    G = (alpha A / (e beta B))^(1 / (alpha + e beta)); Chinchilla's eq. 4 at k=6, e=1.
    fpt: (k, e), or a power-law FlopCount (scaling.base.flops)."""
    al, be = p["alpha"], p["beta"]
    k, e = _power(fpt)
    if al <= 0 or be <= 0:
        return {"a": float("nan"), "b": float("nan"), "G": float("nan")}
    a = be / (al + e * be)
    G = (al * p["A"] / (e * be * p["B"])) ** (1.0 / (al + e * be))
    return {"a": a, "b": 1.0 - e * a, "G": G}


def optimal_nd(p: dict, compute, fpt=SIX_ND) -> tuple[np.ndarray, np.ndarray]:
    """N_opt, D_opt at compute C (FLOPs) under a FLOP count: FLOPs per token k N^e as (k, e)
    (default 6N, Chinchilla's eq. 4), or a FlopCount (scaling.base.flops), whose
    encoder-decoder count is solved exactly at every N (scaling.base.allocation)."""
    if isinstance(fpt, FlopCount) and not fpt.is_power:
        c = np.asarray(compute, float)
        al = compute_optimal(p, c.reshape(1, -1), fpt)
        return al.n.reshape(c.shape), al.d.reshape(c.shape)
    k, e = _power(fpt)
    fr = frontier(p, (k, e))
    ck = np.asarray(compute, float) / k
    n = fr["G"] * ck ** fr["a"]
    return n, ck / n ** e


def flops_per_token_law(n, tokens, flops) -> tuple[tuple, float]:
    """FLOPs per token as k N^e from runs (least squares in logs) and the largest relative
    deviation of a run from it. A 6ND table gives (6, 1) exactly. The last resort of
    scaling.fit.compute for a foreign table whose flops are not 6ND and that says nothing of its
    models (it is extrapolated beyond the runs, and the fit warns); this lab's runs are counted
    by the encoder-decoder formula instead (scaling.base.flops)."""
    ln = np.log(np.asarray(n, float))
    lf = np.log(np.asarray(flops, float) / np.asarray(tokens, float))
    if np.ptp(ln) < 1e-9:
        return (float(np.exp(np.mean(lf - ln))), 1.0), 0.0
    e, lk = np.polyfit(ln, lf, 1)
    dev = float(np.max(np.abs(np.expm1(lf - (lk + e * ln)))))
    return (float(np.exp(lk)), float(e)), dev


@dataclass
class LawFit:
    params: dict                 # E, A, B, alpha, beta (unrounded)
    objective: float             # sum of Huber losses at the optimum
    x: np.ndarray                # internal vector (a, b, e, alpha, beta)
    local_optima: np.ndarray     # distinct local optima found, best first [k, 5]
    n_starts: int                # grid starts scored
    n_refined: int               # starts run to convergence
    converged: bool
    warnings: list = field(default_factory=list)
    fixed: dict = field(default_factory=dict)   # parameters held at given values ({'E': 1.69})


def _distinct(x: np.ndarray, f: np.ndarray, k: int, rtol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Up to k best points that are not the same optimum found twice."""
    order = np.argsort(f)
    keep: list[int] = []
    for i in order:
        if not np.isfinite(f[i]):
            break
        if all(np.max(np.abs(x[i] - x[j]) / (1.0 + np.abs(x[j]))) > rtol for j in keep):
            keep.append(i)
        if len(keep) == k:
            break
    return x[keep], f[keep]


def fit_law(data: LawData, *, starts: np.ndarray | None = None, refine: int | None = 256,
            delta: float = HUBER_DELTA, fixed: dict | None = None) -> LawFit:
    """Best of the grid of starts (Chinchilla's 4,500 by default): Chinchilla's own method.
    `fit_all`, `scaling.fit` and `scaling fit` default to variable projection (`fit_law_vp`,
    method "vp"); `fit(data, method=...)` chooses either.

    refine: how many starts to run to convergence after scoring all of them; None runs every
    start (the literal full grid, ~5 s). The default keeps the 256 lowest-objective starts
    plus the best start of each (alpha, beta) cell of the grid; on the Chinchilla points and
    on synthetic data this finds the same optimum as running all 4,500 (tests/test_fit_law.py).

    fixed: parameters held at given values (e.g. {'E': 1.69}); the grid's starts take them,
    and only the others are fitted.
    """
    slots = fixed_slots(fixed)
    grid = chinchilla_grid() if starts is None else np.asarray(starts, float)
    if slots:
        grid = np.unique(_pin(grid, slots), axis=0)
    f0, _ = huber_objective(grid, data, delta=delta)
    f0 = np.where(np.isfinite(f0), f0, np.inf)
    if refine is None or refine >= len(grid):
        chosen = np.arange(len(grid))
    else:
        chosen = set(np.argsort(f0)[:refine].tolist())
        cells: dict[tuple, int] = {}
        for i, (al, be) in enumerate(map(tuple, grid[:, 3:5])):
            if (al, be) not in cells or f0[i] < f0[cells[(al, be)]]:
                cells[(al, be)] = i
        chosen |= set(cells.values())
        chosen = np.array(sorted(chosen))
    res = _minimize(data, grid[chosen], slots, delta)
    optima, fopt = _distinct(res.x, res.f, 8)
    if len(optima) == 0:
        raise ValueError("no start of the grid gave a finite objective")
    best = optima[0]
    warnings = []
    ibest = int(np.argmin(res.f))
    if not res.converged[ibest]:
        warnings.append("approach 3: the best start hit the iteration limit before converging")
    p = to_params(best)
    for name, lo, hi in (("alpha", 0.0, 3.0), ("beta", 0.0, 3.0)):
        if not (lo < p[name] < hi):
            warnings.append(f"approach 3: {name} = {p[name]:.4g} is outside ({lo}, {hi}); the law is degenerate on these data")
    return LawFit(params=p, objective=float(fopt[0]), x=best, local_optima=optima,
                  n_starts=len(grid), n_refined=len(chosen), converged=bool(res.converged[ibest]),
                  warnings=warnings, fixed=dict(fixed or {}))


def bootstrap_law(data: LawData, fit: LawFit, n_boot: int, rng: np.random.Generator,
                  *, n_starts: int = 3, delta: float = HUBER_DELTA, progress=None) -> np.ndarray:
    """Refit n_boot resamples of the runs (with replacement); returns [n_boot, 5] internal x.

    Each resample is a multiplicity vector over the runs (refit_weighted)."""
    w = draw_weights(len(data), n_boot, rng)
    return refit_weighted(data, fit, w, n_starts=n_starts, delta=delta, progress=progress)


def draw_weights(m: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot resamples of m runs with replacement, each as how often each run was drawn [n_boot, m]."""
    return np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(n_boot)]).astype(float) \
        if n_boot else np.zeros((0, m))


def refit_weighted(data: LawData, fit: LawFit, w: np.ndarray, *, n_starts: int = 3, delta: float = HUBER_DELTA,
                   progress=None) -> np.ndarray:
    """The law refitted under each row of run multiplicities w[k, n]; returns [k, 5] internal x.

    All rows share one data array and run together through the batched L-BFGS, each from the
    full fit's best few distinct local optima (a resample's optimum is near one of them); the
    best is kept.
    """
    n = len(data)
    slots = fixed_slots(fit.fixed)
    starts = fit.local_optima[:n_starts]
    out = np.empty((len(w), 5))
    # Bounds memory (chunk * starts problems of n runs, ~8 MB of weights); larger batches
    # amortise the optimiser's per-iteration numpy overhead.
    chunk = max(1, 1_000_000 // (len(starts) * n))
    for lo in range(0, len(w), chunk):
        hi = min(len(w), lo + chunk)
        w_rep = np.repeat(w[lo:hi], len(starts), axis=0)
        x0 = np.tile(starts, (hi - lo, 1))
        res = _minimize(data, x0, slots, delta, w_rep)
        f = res.f.reshape(hi - lo, len(starts))
        pick = np.argmin(f, axis=1)
        out[lo:hi] = res.x.reshape(hi - lo, len(starts), 5)[np.arange(hi - lo), pick]
        if progress is not None:
            progress(hi - lo)
    return out


# ----------------------------------------------------------------------------- variable projection

VP_ALPHAS = np.round(np.arange(0.02, 3.0, 0.02), 10)   # the (alpha, beta) grid of the projection
VP_SCREEN = 512                                         # cells scored by the Huber objective
VP_POLISH = 16                                          # best of those run to convergence


def _subsets(free: list[int]) -> list[tuple[int, ...]]:
    return [s for r in range(len(free), -1, -1) for s in itertools.combinations(free, r)]


def project(data: LawData, alphas: np.ndarray, betas: np.ndarray, weights: np.ndarray | None = None,
            fixed: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every (alpha, beta) of the grid, the best E, A, B >= 0 in closed form.

    With alpha and beta fixed, L = E + A N^-alpha + B D^-beta is linear in (E, A, B); the
    relative residual (L_pred - L) / L (the log residual to first order) is minimised by
    weighted non-negative least squares, solved exactly by trying every active set (2^3) of
    the 3x3 normal equations and keeping the best feasible one. Only the Gram matrix's cross
    term depends on both exponents: one matrix product for the whole grid.
    Returns coefficients [na, nb, 3] (E, A, B) and the weighted squared error [na, nb].
    """
    fixed = fixed or {}
    L = np.exp(data.log_l)
    w = (1.0 / L**2) * (1.0 if weights is None else weights)
    x1 = np.exp(-alphas[:, None] * data.log_n[None, :])        # [na, n]
    x2 = np.exp(-betas[:, None] * data.log_d[None, :])         # [nb, n]
    na, nb = len(alphas), len(betas)
    known = {k: fixed[name] for k, name in enumerate(("E", "A", "B")) if name in fixed}
    # Target after the held coefficients' terms are taken out: r = L - sum(known).
    r0 = L - known.get(0, 0.0)
    # Moments; index 0 = the constant feature, 1 = x1 (alpha), 2 = x2 (beta).
    s00 = np.full((na, nb), w.sum())
    s01 = np.broadcast_to((x1 * w).sum(1)[:, None], (na, nb))
    s02 = np.broadcast_to((x2 * w).sum(1)[None, :], (na, nb))
    s11 = np.broadcast_to((x1 * x1 * w).sum(1)[:, None], (na, nb))
    s22 = np.broadcast_to((x2 * x2 * w).sum(1)[None, :], (na, nb))
    s12 = (x1 * w) @ x2.T
    # Right-hand side with known A, B terms subtracted: t_k = sum w f_k (r0 - A x1 - B x2).
    A_k, B_k = known.get(1, 0.0), known.get(2, 0.0)
    t0 = (w * r0).sum() - A_k * s01 - B_k * s02
    t1 = np.broadcast_to((x1 * w * r0).sum(1)[:, None], (na, nb)) - A_k * s11 - B_k * s12
    t2 = np.broadcast_to((x2 * w * r0).sum(1)[None, :], (na, nb)) - A_k * s12 - B_k * s22
    rr = (w * r0 * r0).sum() - 2 * A_k * (x1 * w * r0).sum(1)[:, None] - 2 * B_k * (x2 * w * r0).sum(1)[None, :] \
        + A_k**2 * s11 + B_k**2 * s22 + 2 * A_k * B_k * s12
    G = np.stack([np.stack([s00, s01, s02], -1), np.stack([s01, s11, s12], -1), np.stack([s02, s12, s22], -1)], -2)
    t = np.stack([t0 * np.ones((na, nb)), t1, t2], -1)
    best = np.full((na, nb), np.inf)
    coef = np.zeros((na, nb, 3))
    free = [k for k in range(3) if k not in known]
    for S in _subsets(free):
        c = np.zeros((na, nb, 3))
        if S:
            idx = np.array(S)
            Gs = G[:, :, idx[:, None], idx[None, :]]
            ts = t[:, :, idx]
            with np.errstate(all="ignore"):
                try:
                    sol = np.linalg.solve(Gs, ts[..., None])[..., 0]
                except np.linalg.LinAlgError:
                    sol = np.stack([np.linalg.lstsq(g, v, rcond=None)[0] for g, v in
                                    zip(Gs.reshape(-1, len(S), len(S)), ts.reshape(-1, len(S)))]).reshape(na, nb, len(S))
            c[:, :, idx] = sol
            ok = np.all(sol >= 0, axis=-1) & np.all(np.isfinite(sol), axis=-1)
        else:
            ok = np.ones((na, nb), bool)
        # Weighted SSE = rr - 2 c.t + c G c (c over the free coefficients of this subset).
        sse = rr - 2 * np.einsum("abk,abk->ab", c, t) + np.einsum("abk,abkl,abl->ab", c, G, c)
        better = ok & (sse < best)
        best = np.where(better, sse, best)
        coef = np.where(better[..., None], c, coef)
    for k, v in known.items():
        coef[:, :, k] = v
    return coef, best


def _to_x(coef: np.ndarray, alpha: np.ndarray, beta: np.ndarray, floor: float) -> np.ndarray:
    """Grid solutions as internal vectors; a coefficient at 0 (an inactive term) starts at a
    tiny positive value so that its log is finite and L-BFGS may revive it."""
    c = np.maximum(coef, floor)
    return np.stack([np.log(c[:, 1]), np.log(c[:, 2]), np.log(c[:, 0]), alpha, beta], axis=1)


def fit_law_vp(data: LawData, *, delta: float = HUBER_DELTA, fixed: dict | None = None,
               alphas: np.ndarray = VP_ALPHAS, polish: int = VP_POLISH) -> LawFit:
    """Approach 3 by variable projection: (E, A, B) solved in closed form on a fine
    (alpha, beta) grid (`project`), the best cells polished by the batched L-BFGS on the full
    Huber objective. Same optimum as Chinchilla's 4,500 starts (tests/test_fit_law.py)."""
    fixed = dict(fixed or {})
    slots = fixed_slots(fixed)
    al = np.array([fixed["alpha"]]) if "alpha" in fixed else alphas
    be = np.array([fixed["beta"]]) if "beta" in fixed else alphas
    coef, sse = project(data, al, be, fixed=fixed)
    ia, ib = np.meshgrid(np.arange(len(al)), np.arange(len(be)), indexing="ij")
    # Scoring every cell by the Huber objective costs more than the projection itself: the
    # cells with the lowest squared error go on (VP_SCREEN of them), scored by Huber, and
    # the best `polish` are run to convergence.
    keep = np.argsort(sse.ravel())[:VP_SCREEN]
    floor = 1e-8 * float(np.exp(data.log_l).min())
    x0 = _to_x(coef.reshape(-1, 3)[keep], al[ia.ravel()[keep]], be[ib.ravel()[keep]], floor)
    f0, _ = huber_objective(x0, data, delta=delta)
    f0 = np.where(np.isfinite(f0), f0, np.inf)
    chosen = np.argsort(f0)[:polish]
    res = _minimize(data, x0[chosen], slots, delta)
    optima, fopt = _distinct(res.x, res.f, 8)
    if len(optima) == 0:
        raise ValueError("no cell of the (alpha, beta) grid gave a finite objective")
    ibest = int(np.argmin(res.f))
    p = to_params(optima[0])
    warnings = [] if res.converged[ibest] else ["approach 3: the best start hit the iteration limit before converging"]
    for name in ("alpha", "beta"):
        if not (0 < p[name] < 3):
            warnings.append(f"approach 3: {name} = {p[name]:.4g} is outside (0, 3); the law is degenerate on these data")
    return LawFit(params=p, objective=float(fopt[0]), x=optima[0], local_optima=optima, n_starts=sse.size,
                  n_refined=len(chosen), converged=bool(res.converged[ibest]), warnings=warnings, fixed=fixed)


METHODS = ("vp", "grid")


def fit(data: LawData, *, method: str = "vp", refine: int | None = 256, fixed: dict | None = None) -> LawFit:
    """Approach 3 by the chosen method: 'vp' (variable projection, the default) or 'grid'
    (Chinchilla's 4,500 starts; refine as in fit_law)."""
    if method == "vp":
        return fit_law_vp(data, fixed=fixed)
    if method == "grid":
        return fit_law(data, refine=refine, fixed=fixed)
    raise ValueError(f"unknown approach 3 method {method!r}; expected one of {', '.join(METHODS)}")
