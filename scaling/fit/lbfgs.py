"""A batched L-BFGS in numpy: many independent small problems minimised in lock step.

Chinchilla's Approach 3 is a 5-parameter fit started from thousands of points; the cost of a
Python-level optimiser loop per start (scipy) is dominated by call overhead, not arithmetic.
Here every start advances one L-BFGS iteration per step, the objective and its gradient are
evaluated for all of them in one vectorised call, and each start stops on its own criteria.
The algorithm is the textbook one (Nocedal & Wright, alg. 7.4 two-loop recursion) with an
Armijo backtracking line search; converged starts drop out of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# f_and_g(x[k, P], idx[k]) -> (f[k], g[k, P]); idx says which problems of the batch x belongs to,
# so a problem-specific objective (a bootstrap resample's weights) can be picked per row.
Objective = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


@dataclass
class BatchResult:
    """What `minimize_batch` returns: each problem's final point, objective, iterations, and
    whether a tolerance (not the iteration limit) stopped it."""

    x: np.ndarray          # [S, P] final points
    f: np.ndarray          # [S] final objectives
    iterations: np.ndarray  # [S] iterations taken
    converged: np.ndarray  # [S] bool: stopped by a tolerance, not by max_iter


def minimize_batch(
    f_and_g: Objective,
    x0: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 500,
    ftol: float = 1e-12,
    gtol: float = 1e-9,
    max_backtracks: int = 40,
    max_step: float | None = None,
) -> BatchResult:
    """Minimise S problems from x0[S, P] at once.

    A start stops when its relative decrease falls below ftol, its largest gradient component
    below gtol, or its line search cannot decrease the objective any more (the point is a
    minimum to working precision).

    max_step: the largest change of any coordinate in one iteration (None: no limit). With a
    limit, each start descends within its own basin instead of jumping across a ridge on its
    first steps, as a local optimiser is expected to.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _minimize_batch(f_and_g, x0, memory, max_iter, ftol, gtol, max_backtracks, max_step)


@dataclass
class _Memory:
    """The last `memory` steps s and gradient changes y of every start, a ring per start."""

    s: np.ndarray       # [m, S, P]
    y: np.ndarray       # [m, S, P]
    rho: np.ndarray     # [m, S]: 1 / (s . y); 0 marks an empty or rejected slot
    head: np.ndarray    # [S]: next slot to write, per start

    @classmethod
    def empty(cls, memory: int, S: int, P: int) -> "_Memory":
        return cls(np.zeros((memory, S, P)), np.zeros((memory, S, P)), np.zeros((memory, S)),
                   np.zeros(S, dtype=np.int64))

    def remember(self, mi: np.ndarray, step: np.ndarray, ydiff: np.ndarray) -> None:
        """Write each moved start's (s, y) pair into its next slot; a pair that fails the
        curvature condition is written with rho 0, so the two-loop recursion skips it."""
        sy = np.einsum("kp,kp->k", step, ydiff)
        # Curvature condition; a vanishing s.y would make rho overflow, so it is skipped too.
        keep = (sy > 1e-12 * np.einsum("kp,kp->k", ydiff, ydiff)) & (sy > 1e-300)
        slot = self.head[mi]
        self.s[slot, mi] = step
        self.y[slot, mi] = ydiff
        self.rho[slot, mi] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
        self.head[mi] = (slot + 1) % self.rho.shape[0]


def _two_loop(mem: _Memory, gi: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-H g for the starts idx by the two-loop recursion (newest pair first; the slot order of
    each start comes from its head), and |g|."""
    memory = mem.rho.shape[0]
    slots = np.arange(memory)
    order = (mem.head[idx][None, :] - 1 - slots[:, None]) % memory   # [m, k]
    q = gi.copy()
    alph = np.zeros((memory, idx.size))
    for j in range(memory):
        sl = order[j]
        sj = mem.s[sl, idx]
        yj = mem.y[sl, idx]
        rj = mem.rho[sl, idx]
        alph[j] = rj * np.einsum("kp,kp->k", sj, q)
        q -= alph[j][:, None] * yj
    newest = order[0]
    yn, rn = mem.y[newest, idx], mem.rho[newest, idx]
    yy = np.einsum("kp,kp->k", yn, yn)
    gamma = np.where(rn > 0, 1.0 / np.maximum(rn * yy, 1e-300), 0.0)
    # No curvature yet: a first step of unit length along -g (scipy does the same).
    gnorm = np.linalg.norm(gi, axis=1)
    gamma = np.where(rn > 0, gamma, 1.0 / np.maximum(gnorm, 1e-300))
    r = gamma[:, None] * q
    for j in range(memory - 1, -1, -1):
        sl = order[j]
        sj = mem.s[sl, idx]
        yj = mem.y[sl, idx]
        rj = mem.rho[sl, idx]
        beta = rj * np.einsum("kp,kp->k", yj, r)
        r += sj * (alph[j] - beta)[:, None]
    return -r, gnorm


def _descent(mem: _Memory, gi: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The search direction of each start and its slope g . d: L-BFGS's, or, where that is not
    a descent direction, steepest descent with the start's memory forgotten."""
    d, gnorm = _two_loop(mem, gi, idx)
    slope = np.einsum("kp,kp->k", gi, d)
    bad = ~(slope < 0) | ~np.all(np.isfinite(d), axis=1)
    if bad.any():   # not a descent direction: forget the memory, use steepest descent
        d[bad] = -gi[bad] / np.maximum(gnorm[bad], 1e-300)[:, None]
        slope[bad] = -gnorm[bad]
        mem.rho[:, idx[bad]] = 0.0
    return d, slope


def _backtrack(f_and_g: Objective, idx, xi, fi, gi, d, slope, max_step, max_backtracks):
    """Armijo backtracking, only re-evaluating the starts still searching: the step length t,
    f and g at each accepted point, and which starts found no acceptable step."""
    t = np.ones(idx.size)
    if max_step is not None:
        t = np.minimum(1.0, max_step / np.maximum(np.abs(d).max(axis=1), 1e-300))
    fn = np.full(idx.size, np.inf)
    gn = np.zeros_like(gi)
    searching = np.ones(idx.size, dtype=bool)
    for _bt in range(max_backtracks):
        si = np.flatnonzero(searching)
        if si.size == 0:
            break
        xt = xi[si] + t[si, None] * d[si]
        ft, gt = f_and_g(xt, idx[si])
        ok = np.isfinite(ft) & (ft <= fi[si] + 1e-4 * t[si] * slope[si])
        fn[si[ok]] = ft[ok]
        gn[si[ok]] = gt[ok]
        searching[si[ok]] = False
        t[si[~ok]] *= 0.5
    return t, fn, gn, searching


def _minimize_batch(f_and_g, x0, memory, max_iter, ftol, gtol, max_backtracks, max_step) -> BatchResult:
    x = np.array(x0, dtype=np.float64, copy=True)
    S, P = x.shape
    f, g = f_and_g(x, np.arange(S))
    f = np.where(np.isfinite(f), f, np.inf)
    mem = _Memory.empty(memory, S, P)
    active = np.isfinite(f) & (np.abs(g).max(axis=1) > gtol)
    converged = ~active & np.isfinite(f)
    iters = np.zeros(S, dtype=np.int64)

    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi, xi, fi = g[idx], x[idx], f[idx]
        d, slope = _descent(mem, gi, idx)
        t, fn, gn, stuck = _backtrack(f_and_g, idx, xi, fi, gi, d, slope, max_step, max_backtracks)
        # stuck: no acceptable step, a minimum to working precision.
        moved = ~stuck
        mi = idx[moved]
        step = t[moved, None] * d[moved]
        mem.remember(mi, step, gn[moved] - gi[moved])
        f_old = f[mi]
        x[mi] += step
        f[mi] = fn[moved]
        g[mi] = gn[moved]
        iters[idx] += 1
        small_f = (f_old - f[mi]) <= ftol * np.maximum(np.abs(f_old), 1e-300)
        small_g = np.abs(g[mi]).max(axis=1) <= gtol
        done = small_f | small_g
        active[mi[done]] = False
        converged[mi[done]] = True
        active[idx[stuck]] = False
        converged[idx[stuck]] = True
    return BatchResult(x=x, f=f, iterations=iters, converged=converged)
