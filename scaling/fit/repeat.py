"""Data-constrained extension (Muennighoff et al. 2023): repeated tokens are worth less.

With U unique tokens seen R = D/U - 1 extra times, the law sees an effective data size
    D' = U + U R*_D (1 - exp(-R / R*_D)),
and parameters beyond those U tokens can use, U_N = min(N, N_opt(U)), count as
    N' = U_N + U_N R*_N (1 - exp(-R_N / R*_N)),   R_N = N / U_N - 1.
As in the paper, the base law (E, A, B, alpha, beta) is fitted first (on the runs without
repetition where there are enough of them), then R*_D and R*_N on all runs with it held fixed.
Their fitted values on the paper's data: R*_D ~ 15.4, R*_N ~ 5.3.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from scaling.fit.law import HUBER_DELTA, frontier, huber


def _n_opt_for_tokens(p: dict, d: np.ndarray) -> np.ndarray:
    """The compute-optimal size for a data budget d under the law's 6ND frontier."""
    fr = frontier(p)
    c6 = (fr["G"] * d) ** (1.0 / fr["b"])
    return fr["G"] * c6 ** fr["a"]


def effective(p: dict, n, d, u, r_star_d: float, r_star_n: float):
    n, d, u = (np.asarray(v, float) for v in (n, d, u))
    r_d = np.maximum(d / u - 1.0, 0.0)
    d_eff = np.minimum(d, u + u * r_star_d * (1 - np.exp(-r_d / r_star_d)))
    u_n = np.minimum(n, _n_opt_for_tokens(p, np.minimum(d, u)))
    r_n = np.maximum(n / u_n - 1.0, 0.0)
    n_eff = u_n + u_n * r_star_n * (1 - np.exp(-r_n / r_star_n))
    return n_eff, d_eff


def fit_repetition(p: dict, n, d, u, loss, delta: float = HUBER_DELTA) -> dict:
    """R*_D and R*_N by the same Huber objective on log loss, from a small grid of starts."""
    log_l = np.log(np.asarray(loss, float))

    def obj(z):
        ne, de = effective(p, n, d, u, float(np.exp(z[0])), float(np.exp(z[1])))
        r = np.log(p["E"] + p["A"] / ne ** p["alpha"] + p["B"] / de ** p["beta"]) - log_l
        return float(np.sum(huber(r, delta)))

    best = None
    for z0 in ((np.log(15.4), np.log(5.3)), (0.0, 0.0), (np.log(50), np.log(50)), (np.log(3), np.log(20))):
        r = minimize(obj, np.array(z0), method="Nelder-Mead",
                     options={"xatol": 1e-6, "fatol": 1e-12, "maxiter": 4000})
        if best is None or r.fun < best.fun:
            best = r
    return {"R_star_D": float(np.exp(best.x[0])), "R_star_N": float(np.exp(best.x[1])),
            "objective": float(best.fun)}
