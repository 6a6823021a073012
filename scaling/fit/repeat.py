"""Data-constrained extension (Muennighoff et al. 2023): repeated tokens and excess parameters
are worth less.

With U unique tokens seen R_D = D/U - 1 extra times, the law sees an effective data size
    D' = U + U R*_D (1 - exp(-R_D / R*_D)),
and parameters beyond those the unique data can use, U_N = min(N, N_opt(U)) (the
compute-optimal size whose optimal data is U, under the base law), count as
    N' = U_N + U_N R*_N (1 - exp(-R_N / R*_N)),   R_N = N / U_N - 1.
These are the definitions of the paper's fitting code (github.com/huggingface/datablations,
utils/parametric_fit.ipynb, Apache-2.0): U is the unique tokens a run saw, min(D, U).

The fit goes in stages, as the paper's does:
  1. the base law (E, A, B, alpha, beta) from runs on which the data-constrained law IS the
     base law (R_D = 0 and R_N = 0), Huber on log loss as Approach 3;
  2. R*_D and R*_N on all runs with the base law held (runs with R_D = R_N = 0 add a constant
     to the objective, so the repeated and over-parameterised runs decide them).
The paper's stage 1 was Chinchilla's C4 IsoFLOP points, taken as plain single-epoch runs. By
the law's own N', a single-epoch run larger than N_opt(D) is penalised too, so fitting it as a
plain run biases the base law (tests/test_fit_repeat.py shows by how much); the default
(`unpenalised`) leaves such runs to stage 2 and repeats stage 1 until its set of runs settles.
`single-epoch` takes every run with D <= U, as the paper took Chinchilla's.
On the paper's 182 runs with its base law held, stage 2 gives R*_D = 15.37, R*_N = 5.315
(its notebook, float32 torch: 15.39, 5.31; the paper: 15.4, 5.3).
"""

from __future__ import annotations

import numpy as np

from scaling.fit import law
from scaling.fit.lbfgs import minimize_batch

STAGE1_MODES = ("unpenalised", "single-epoch", "joint")
# Starts of stage 2. The paper's notebook runs L-BFGS from R*_D, R*_N in linspace(0, 20, 4)
# each and keeps the best; its zero starts give NaN (0/0 at R = 0) and never win, so these
# nine are its grid. On its runs the objective has a long curved valley with a second, very
# slightly lower minimum far out (R*_D ~ 95, R*_N ~ 1.7 with its base law); the wide grid
# below, from "decays within one repetition" to "hardly decays", is run as a check and a lower
# optimum it finds is reported beside the paper's, with a warning.
PAPER_STARTS = np.array([(a, b) for a in (20 / 3, 40 / 3, 20.0) for b in (20 / 3, 40 / 3, 20.0)])
_WIDE = np.array([0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0])
WIDE_STARTS = np.array([(a, b) for a in _WIDE for b in _WIDE])
_SAME = 1e-9   # relative slack when comparing D with U and N with U_N (float noise)
# The objective (Huber with delta 1e-3 on residuals of ~1e-2 is nearly L1) has kinks and several
# local optima along a valley in (R*_D, R*_N); a local search should stay in its start's basin
# rather than jump across on its first, unit-length steps: at most 10% in R* per iteration.
_MAX_STEP = 0.1
# R* is searched in [1e-2, 1e6]: at 1e6 repetitions no run of any realistic study decays at all,
# and the objective is flat beyond, where an unbounded search would wander for thousands of
# steps. An R* at the upper bound reads "no decay measured".
Z_LO, Z_HI = np.log(1e-2), np.log(1e6)



def _lse_huber(u1, u2, u3, log_l, delta, w):
    """Huber loss of log L = LSE(u1, u2, u3) against log_l, its clipped slope over the sum of
    exponentials, and the three (shifted) exponentials the gradients need; w weights runs."""
    m = np.maximum(np.maximum(u1, u2), u3)
    e1, e2, e3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(u3 - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - log_l[None, :]
    h = law.huber(r, delta)
    c = np.clip(r, -delta, delta) / s
    if w is not None:
        h, c = h * w, c * w
    return h, c, e1, e2, e3

def n_opt_for_tokens(p: dict, d, fpt: tuple = law.SIX_ND) -> np.ndarray:
    """The compute-optimal size whose optimal data is d, under the law's frontier with FLOPs
    per token k N^e: N = G (C/k)^a and D = (C/k) N^-e give C/k = (d G^e)^(1/b)."""
    fr = law.frontier(p, fpt)
    ck = (np.asarray(d, float) * fr["G"] ** fpt[1]) ** (1.0 / fr["b"])
    return fr["G"] * ck ** fr["a"]


def excess(p: dict, n, d, u, fpt: tuple = law.SIX_ND):
    """(U_seen, R_D, U_N, R_N) of every run under base law p."""
    n, d, u = (np.asarray(v, float) for v in (n, d, u))
    seen = np.minimum(d, u)
    r_d = np.maximum(d / seen - 1.0, 0.0)
    u_n = np.minimum(n, n_opt_for_tokens(p, seen, fpt))
    r_n = np.maximum(n / u_n - 1.0, 0.0)
    return seen, r_d, u_n, r_n


def effective(p: dict, n, d, u, r_star_d: float, r_star_n: float, fpt: tuple = law.SIX_ND):
    """(N', D') of every run."""
    seen, r_d, u_n, r_n = excess(p, n, d, u, fpt)
    d_eff = seen * (1 + r_star_d * -np.expm1(-r_d / r_star_d))
    n_eff = u_n * (1 + r_star_n * -np.expm1(-r_n / r_star_n))
    return n_eff, d_eff


def predict(p: dict, n, d, u, r_star_d: float, r_star_n: float, fpt: tuple = law.SIX_ND) -> np.ndarray:
    """The data-constrained loss: the base law p at the effective N' and D' of runs that repeat
    their U unique tokens (`effective`)."""
    ne, de = effective(p, n, d, u, r_star_d, r_star_n, fpt)
    return law.predict_loss(p, ne, de)


# ----------------------------------------------------------------------------- stage 2

def _stage2_objective(xb: np.ndarray, log_un: np.ndarray, r_n: np.ndarray, log_seen: np.ndarray,
                      r_d: np.ndarray, log_l: np.ndarray, weights: np.ndarray | None, delta: float):
    """f(z) for z = (log R*_D, log R*_N) of k problems, each with its own base law.

    xb[k, 5] base laws (internal a, b, e, alpha, beta); log_un, r_n [k, n] (they depend on
    the base law); log_seen, r_d, log_l [n]; weights None or [k, n]."""
    def f_and_g(z, idx):
        x = xb[idx]
        inside = (z >= Z_LO) & (z <= Z_HI)
        z = np.clip(z, Z_LO, Z_HI)
        rd, rn = np.exp(z[:, 0:1]), np.exp(z[:, 1:2])
        xd, xn = r_d[None, :] / rd, r_n[idx] / rn
        sd, sn = -np.expm1(-xd), -np.expm1(-xn)
        qd, qn = 1 + rd * sd, 1 + rn * sn                       # D' / U, N' / U_N
        u1 = x[:, 0:1] - x[:, 3:4] * (log_un[idx] + np.log(qn))
        u2 = x[:, 1:2] - x[:, 4:5] * (log_seen[None, :] + np.log(qd))
        u3 = np.broadcast_to(x[:, 2:3], u1.shape)
        h, c, e1, e2, e3 = _lse_huber(u1, u2, u3, log_l, delta, None if weights is None else weights[idx])
        # d log(q) / d log R* = R* (s - x e^-x) / q
        dqd = rd * (sd - xd * np.exp(-xd)) / qd
        dqn = rn * (sn - xn * np.exp(-xn)) / qn
        g = np.stack([-(c * e2 * x[:, 4:5] * dqd).sum(1), -(c * e1 * x[:, 3:4] * dqn).sum(1)], axis=1)
        return h.sum(1), g * inside
    return f_and_g


def _stage2_inputs(xb: np.ndarray, n, d, u, loss, fpt):
    """Per base law, U_N and R_N; per run, U_seen, R_D and log loss."""
    cols = []
    for x in xb:
        seen, r_d, u_n, r_n = excess(law.to_params(x), n, d, u, fpt)
        cols.append((np.log(u_n), r_n))
    log_un = np.stack([c[0] for c in cols])
    r_n = np.stack([c[1] for c in cols])
    return log_un, r_n, np.log(seen), r_d, np.log(np.asarray(loss, float))


def _polish(p: dict, n, d, u, loss, starts: np.ndarray, fpt, delta) -> tuple[np.ndarray, float, bool]:
    xb = law.from_params(p)[None, :]
    log_un, r_n, log_seen, r_d, log_l = _stage2_inputs(xb, n, d, u, loss, fpt)
    z0 = np.log(np.asarray(starts, float))
    f_and_g = _stage2_objective(np.repeat(xb, len(z0), 0), np.repeat(log_un, len(z0), 0),
                                np.repeat(r_n, len(z0), 0), log_seen, r_d, log_l, None, delta)
    f0, _ = f_and_g(z0, np.arange(len(z0)))
    best = np.argsort(np.where(np.isfinite(f0), f0, np.inf))
    res = minimize_batch(lambda z, idx: f_and_g(z, best[idx]), z0[best], max_step=_MAX_STEP, max_iter=2000)
    i = int(np.argmin(res.f))
    return res.x[i], float(res.f[i]), bool(res.converged[i])


def fit_r_star(p: dict, n, d, u, loss, *, fpt: tuple = law.SIX_ND, delta: float = law.HUBER_DELTA,
               starts: np.ndarray = PAPER_STARTS) -> dict:
    """Stage 2: R*_D and R*_N with base law p held, by the Huber objective on log loss, the
    best of L-BFGS from `starts` (the paper's grid). The wide grid is run too: `wider` holds
    its optimum when that is lower (R* are then poorly identified by these runs)."""
    z, f, conv = _polish(p, n, d, u, loss, starts, fpt, delta)
    z = np.clip(z, Z_LO, Z_HI)
    out = {"R_star_D": float(np.exp(z[0])), "R_star_N": float(np.exp(z[1])), "objective": f, "converged": conv,
           "z": z, "wider": None}
    zw, fw, _ = _polish(p, n, d, u, loss, WIDE_STARTS, fpt, delta)
    zw = np.clip(zw, Z_LO, Z_HI)
    if fw < f * (1 - 1e-6) and np.max(np.abs(zw - z)) > 1e-3:
        out["wider"] = {"R_star_D": float(np.exp(zw[0])), "R_star_N": float(np.exp(zw[1])), "objective": fw}
    return out


def bootstrap_r_star(xb: np.ndarray, z_start: np.ndarray, n, d, u, loss, weights: np.ndarray, *,
                     fpt: tuple = law.SIX_ND, delta: float = law.HUBER_DELTA) -> np.ndarray:
    """Stage 2 of every resample at once: base laws xb[k, 5], run multiplicities weights[k, n];
    each started from the full fit's R* (z_start, log R*). Returns [k, 2] (R*_D, R*_N)."""
    log_un, r_n, log_seen, r_d, log_l = _stage2_inputs(xb, n, d, u, loss, fpt)
    f_and_g = _stage2_objective(xb, log_un, r_n, log_seen, r_d, log_l, weights, delta)
    res = minimize_batch(f_and_g, np.tile(z_start, (len(xb), 1)), max_step=_MAX_STEP, max_iter=2000)
    return np.exp(np.clip(res.x, Z_LO, Z_HI))


# ----------------------------------------------------------------------------- stage 1

def stage1(n, d, u, loss, *, mode: str = "unpenalised", method: str = "vp", refine: int | None = 256,
           fixed: dict | None = None, fpt: tuple = law.SIX_ND, max_rounds: int = 8):
    """The base law and the runs it was fitted on: (LawFit, mask, rounds, warnings, joint);
    joint is True when too few runs are left for the base law alone.

    `single-epoch`: every run with D <= U. `unpenalised` (default): of those, the ones with
    N <= N_opt(D) under the base law, refitted until that set no longer changes (the law
    decides which runs are over-parameterised, and those runs move the law)."""
    if mode not in STAGE1_MODES[:2]:
        raise ValueError(f"unknown stage-1 mode {mode!r}; expected one of {', '.join(STAGE1_MODES)}")
    n, d, u, loss = (np.asarray(v, float) for v in (n, d, u, loss))
    single = d <= u * (1 + _SAME)
    why = law.too_few(n[single])
    if why:
        raise ValueError(f"stage 1 (the base law) has {why.split(';')[0]} that saw each token at most once; it "
                         f"needs at least {law.MIN_RUNS} runs over {law.MIN_SIZES} sizes (or hold the base law: "
                         "--fix E=..,A=..,B=..,alpha=..,beta=..)")

    def fit_on(m):
        return law.fit(law.LawData.from_arrays(n[m], d[m], loss[m]), method=method, refine=refine, fixed=fixed)

    mask = single
    fit = fit_on(mask)
    rounds, warnings = 1, []
    if mode == "single-epoch":
        return fit, mask, rounds, warnings, False
    history = {mask.tobytes()}
    while True:
        _, _, u_n, _ = excess(fit.params, n, d, u, fpt)
        new = single & (n <= u_n * (1 + _SAME))
        if np.array_equal(new, mask):
            break
        if law.too_few(n[new]):
            # The runs do not separate the base law from the penalties: the caller fits all
            # seven parameters jointly, from this law.
            warnings.append(f"data-constrained stage 1: only {int(new.sum())} of {int(single.sum())} single-epoch "
                            "runs are not larger than N_opt of their data, too few for the base law alone; all "
                            "seven parameters are fitted jointly on all runs instead")
            return fit, mask, rounds, warnings, True
        if new.tobytes() in history or rounds >= max_rounds:
            warnings.append(f"data-constrained stage 1: the set of runs without excess parameters did not settle in "
                            f"{rounds} rounds; the base law is the last round's")
            break
        history.add(new.tobytes())
        mask = new
        fit = fit_on(mask)
        rounds += 1
    return fit, mask, rounds, warnings, False


# ----------------------------------------------------------------------------- joint fit

def _joint_objective(n, d, u, loss, weights: np.ndarray | None, fpt, delta):
    """f and its gradient for k vectors x = (a, b, e, alpha, beta, log R*_D, log R*_N): all
    seven at once on every run. U_N = min(N, N_opt(U)) moves with the base law: at the
    optimum alpha A N^-alpha = e_f beta B D^-beta (FLOPs per token k N^e_f), so
    log N_opt(U) = (log(alpha / (e_f beta)) + a - b + beta log U) / alpha."""
    n, d, u = (np.asarray(v, float) for v in (n, d, u))
    seen = np.minimum(d, u)
    log_seen, log_n, log_l = np.log(seen), np.log(n), np.log(np.asarray(loss, float))
    r_d = np.maximum(d / seen - 1.0, 0.0)
    e_f = fpt[1]

    def f_and_g(x, idx):
        with np.errstate(all="ignore"):
            a, b, e, al, be = (x[:, j:j + 1] for j in range(5))
            inside = (x[:, 5:] >= Z_LO) & (x[:, 5:] <= Z_HI)
            z = np.clip(x[:, 5:], Z_LO, Z_HI)
            rd, rn = np.exp(z[:, 0:1]), np.exp(z[:, 1:2])
            log_nopt = (np.log(al / (e_f * be)) + a - b + be * log_seen[None, :]) / al
            capped = log_nopt < log_n[None, :]                       # U_N = N_opt(U) < N
            log_un = np.where(capped, log_nopt, log_n[None, :])
            r_n = np.expm1(log_n[None, :] - log_un)
            xn, xd = r_n / rn, r_d[None, :] / rd
            sn, sd = -np.expm1(-xn), -np.expm1(-xd)
            qn, qd = 1 + rn * sn, 1 + rd * sd
            L1 = log_un + np.log(qn)
            L2 = log_seen[None, :] + np.log(qd)
            u1, u2 = a - al * L1, b - be * L2
            u3 = np.broadcast_to(e, u1.shape)
            h, c, e1, e2, e3 = _lse_huber(u1, u2, u3, log_l, delta, None if weights is None else weights[idx])
            c1, c2, c3 = c * e1, c * e2, c * e3
            # dL1/dlog_nopt where capped: through log U_N and through R_N = N/U_N - 1.
            k1 = np.where(capped, 1 - (1 + r_n) * np.exp(-xn) / qn, 0.0)
            t = -al * k1                                              # du1 / dlog_nopt
            ga = (c1 * (1 + t / al)).sum(1)
            gb = (c2 + c1 * (-t / al)).sum(1)
            ge = c3.sum(1)
            gal = (c1 * (-L1 + t * (1 - al * log_nopt) / al ** 2)).sum(1)
            gbe = (c2 * -L2 + c1 * t * (log_seen[None, :] - 1 / be) / al).sum(1)
            gzd = (c2 * -be * rd * (sd - xd * np.exp(-xd)) / qd).sum(1)
            gzn = (c1 * -al * rn * (sn - xn * np.exp(-xn)) / qn).sum(1)
            g = np.stack([ga, gb, ge, gal, gbe, gzd, gzn], axis=1)
            g[:, 5:] *= inside
            f = h.sum(1)
            return np.where(np.isfinite(f), f, np.inf), g
    return f_and_g


def fit_joint(n, d, u, loss, base_starts: np.ndarray, *, fpt: tuple = law.SIX_ND,
              delta: float = law.HUBER_DELTA, fixed: dict | None = None) -> tuple[np.ndarray, float, bool]:
    """All seven parameters on all runs, from base laws base_starts[k, 5] each with the
    paper's R* starts; the best (x[7], objective, converged)."""
    z0 = np.log(PAPER_STARTS)
    x0 = np.array([np.r_[xb, z] for xb in base_starts for z in z0])
    f_and_g = _joint_objective(n, d, u, loss, None, fpt, delta)
    slots = law.fixed_slots(fixed)
    res = minimize_batch(law._holding(f_and_g, slots), law._pin(x0, slots), max_step=_MAX_STEP, max_iter=3000)
    i = int(np.argmin(np.where(np.isfinite(res.f), res.f, np.inf)))
    x = res.x[i].copy()
    x[5:] = np.clip(x[5:], Z_LO, Z_HI)
    return x, float(res.f[i]), bool(res.converged[i])


def bootstrap_joint(x: np.ndarray, n, d, u, loss, weights: np.ndarray, *, fpt: tuple = law.SIX_ND,
                    delta: float = law.HUBER_DELTA, fixed: dict | None = None) -> np.ndarray:
    """The joint fit of every resample (run multiplicities weights[k, n]) from the full fit's x."""
    f_and_g = _joint_objective(n, d, u, loss, weights, fpt, delta)
    slots = law.fixed_slots(fixed)
    x = minimize_batch(law._holding(f_and_g, slots), np.tile(x, (len(weights), 1)), max_step=_MAX_STEP,
                       max_iter=3000).x
    x[:, 5:] = np.clip(x[:, 5:], Z_LO, Z_HI)
    return x
