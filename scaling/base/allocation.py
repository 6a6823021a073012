"""The compute-optimal N and D of a law L(N, D) = E + A/N^alpha + B/D^beta under a FLOP count:
the one function the fit's derived quantities, the plan's optimum and the figures' frontiers
all call, so that they agree.

Along the compute budget D = C / per_token(N), write x = log N and h(x) = log(FLOPs per token
per parameter) (`FlopCount.log_per_param`). The optimum is where

    F(x) = log(alpha A) - alpha x - log(beta B) - log(1 + h'(x)) + beta (log C - x - h(x)) = 0,

(the two terms' slopes in x balance), and by the implicit function theorem its local slopes are

    a = d log N_opt / d log C = beta / (alpha + beta + beta h' + h'' / (1 + h')),
    b = d log D_opt / d log C = 1 - (1 + h') a.

Under a power-law count k N^e (h' = e - 1, h'' = 0; 6ND is k = 6, e = 1) these are Chinchilla's
closed forms (eq. 4): N_opt = G (C/k)^a, a = beta / (alpha + e beta), b = 1 - e a, and they are
used as such. Under the encoder-decoder count the root is bracketed on a log grid of N (7
decades around sqrt(C/6), the least loss on it) and refined by bisection of F, then Newton's
steps (F' = -(alpha + beta + beta h' + h''/(1 + h'))) to machine precision, vectorised over
parameter sets and computes together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scaling.base.flops import FlopCount

PARAMS = ("E", "A", "B", "alpha", "beta")
DECADES = (-4.0, 3.0)        # searched around sqrt(C/6): an optimum at the edge flags a degenerate law
GRID = 71                    # grid points over those 7 decades (0.1 decades apart): the bracket
BISECTIONS = 12              # the bracket (0.2 decades) to 1e-4 of a decade, then
NEWTON = 3                   # Newton's steps on F to machine precision
_CHUNK = 4096                # (parameter set, compute) pairs searched at once: bounds memory


def law_columns(params) -> list[np.ndarray]:
    """E, A, B, alpha, beta as column arrays [S, 1] from a dict (S = 1) or rows [S, 5]."""
    if isinstance(params, dict):
        return [np.array([[float(params[k])]]) for k in PARAMS]
    s = np.asarray(params, float).reshape(-1, 5)
    return [s[:, i:i + 1] for i in range(5)]


@dataclass
class Allocation:
    """The compute-optimal model at each (parameter set, compute): N, D, its loss, the local
    slopes a = d log N_opt / d log C and b = d log D_opt / d log C, and whether the optimum
    lies at the edge of the searched range (a degenerate law). Arrays of one broadcast shape."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    a: np.ndarray
    b: np.ndarray
    at_edge: np.ndarray


def _window(log_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = 0.5 * (log_c - math.log(6.0))
    return centre + DECADES[0] * math.log(10), centre + DECADES[1] * math.log(10)


def _closed_form(E, A, B, al, be, log_c, count: FlopCount) -> Allocation:
    k, e = float(count.k), float(count.e)
    with np.errstate(all="ignore"):
        bad = ~((al > 0) & (be > 0))
        s = al + e * be
        a = np.where(bad, np.nan, be / s)
        log_g = np.where(bad, np.nan, (np.log(al * A) - np.log(e * be * B)) / s)
        x = log_g + a * (log_c - math.log(k))
        log_d = log_c - math.log(k) - e * x
        n, d = np.exp(x), np.exp(log_d)
        loss = E + A * np.exp(-al * x) + B * np.exp(-be * log_d)
    lo, hi = _window(log_c)
    return Allocation(n, d, loss, a, 1.0 - e * a, ~((x >= lo) & (x <= hi)))


def _root(A, B, al, be, log_c, count: FlopCount):
    """Flat arrays [P] in, (x, at_edge) out: the least loss on the grid, then bisection of F
    between its neighbours."""
    # Every row's window on one grid of log N (0.1 decades apart, aligned to its multiples), so
    # that the count is evaluated once per grid point, not once per row and point.
    lo, _ = _window(log_c)
    step = (DECADES[1] - DECADES[0]) * math.log(10) / (GRID - 1)
    k0 = np.floor(lo / step).astype(np.int64)
    xs = np.arange(k0.min(), k0.max() + GRID) * step
    idx = (k0 - k0.min())[:, None] + np.arange(GRID)[None, :]              # [P, G]
    xg, h = xs[idx], count.log_per_param(xs, 0)[0][idx]
    with np.errstate(over="ignore", invalid="ignore"):
        L = A[:, None] * np.exp(-al[:, None] * xg) + B[:, None] * np.exp(-be[:, None] * (log_c[:, None] - xg - h))
    L = np.where(np.isfinite(L), L, np.inf)
    j = np.argmin(L, axis=1)
    rows = np.arange(len(j))
    x_lo = xg[rows, np.clip(j - 1, 0, GRID - 1)]
    x_hi = xg[rows, np.clip(j + 1, 0, GRID - 1)]

    def F(x, slope: bool = False):
        hx, h1, h2 = count.log_per_param(x)
        g = np.maximum(1.0 + h1, 1e-12)
        with np.errstate(all="ignore"):
            f = np.log(al * A) - al * x - np.log(be * B) - np.log(g) + be * (log_c - x - hx)
            return (f, -(al + be + be * h1 + h2 / g)) if slope else f

    ok = (F(x_lo) > 0) & (F(x_hi) < 0)
    a_, b_ = x_lo.copy(), x_hi.copy()
    for _ in range(BISECTIONS):
        mid = 0.5 * (a_ + b_)
        pos = F(mid) > 0
        a_ = np.where(pos, mid, a_)
        b_ = np.where(pos, b_, mid)
    x = 0.5 * (a_ + b_)
    for _ in range(NEWTON):      # F is smooth inside the bracket: Newton's steps, kept in it
        f, df = F(x, slope=True)
        with np.errstate(all="ignore"):
            step = np.where(df < 0, f / df, 0.0)
        x = np.clip(x - step, a_, b_)
    x = np.where(ok, x, xg[rows, j])
    return x, (j == 0) | (j == GRID - 1)


def compute_optimal(params, compute, count: FlopCount) -> Allocation:
    """The compute-optimal allocation of the law(s) `params` (a dict, or rows [S, 5] of E, A,
    B, alpha, beta) at training compute `compute` (FLOPs) under `count`.

    Shapes: the parameters are columns [S, 1]; compute broadcasts against them (a scalar,
    [1, K] for a range of computes, [S, 1] for one compute per parameter set), and every
    array of the result has the broadcast shape."""
    E, A, B, al, be = law_columns(params)
    log_c = np.log(np.asarray(compute, float))
    shape = np.broadcast_shapes(E.shape, log_c.shape)
    E, A, B, al, be, log_c = (np.broadcast_to(v, shape) for v in (E, A, B, al, be, log_c))
    if count.is_power:
        return _closed_form(E, A, B, al, be, log_c, count)
    flat = [np.ascontiguousarray(v).ravel() for v in (E, A, B, al, be, log_c)]
    P = flat[0].size
    x = np.empty(P)
    edge = np.zeros(P, bool)
    for s in range(0, P, _CHUNK):
        part = [v[s:s + _CHUNK] for v in flat]
        x[s:s + _CHUNK], edge[s:s + _CHUNK] = _root(*part[1:5], part[5], count)
    Ef, Af, Bf, alf, bef, lcf = flat
    hx, h1, h2 = count.log_per_param(x)
    with np.errstate(all="ignore"):
        log_d = lcf - x - hx
        loss = Ef + Af * np.exp(-alf * x) + Bf * np.exp(-bef * log_d)
        g = np.maximum(1.0 + h1, 1e-12)
        a = bef / (alf + bef + bef * h1 + h2 / g)
        b = 1.0 - g * a
    out = [v.reshape(shape) for v in (np.exp(x), np.exp(log_d), loss, a, b, edge)]
    return Allocation(*out)


def tokens_for_optimal(params, n, count: FlopCount) -> np.ndarray:
    """The D that makes a model of N parameters compute-optimal, per parameter set [S, 1]: the
    first-order condition F = 0 above solved for log D at x = log N,

        D = (beta B (1 + h'(x)) N^alpha / (alpha A))^(1 / beta),

    Chinchilla's (beta B N^alpha / (alpha A))^(1/beta) under 6ND."""
    E, A, B, al, be = law_columns(params)
    x = math.log(float(n))
    h1 = count.log_per_param(np.array(x))[1]
    with np.errstate(all="ignore"):
        return np.exp((np.log(be * B * np.maximum(1.0 + h1, 1e-12)) + al * x - np.log(al * A)) / be)
