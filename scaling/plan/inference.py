"""Inference in the bill (after Sardana et al. 2023, "Beyond Chinchilla-optimal").

A model that will be served for T inference tokens costs its training compute plus T times
its forward FLOPs per token. Along the iso-loss curve of the fitted law,

    L* = E + A/N^alpha + B/D^beta   =>   D(N) = (B / (L* - E - A/N^alpha))^(1/beta),

a smaller model needs more training tokens but serves cheaper, so the N of least
training + inference compute shrinks as T grows. With T = 0 it is the Chinchilla-optimal
(training-compute-optimal) model of that loss, which is what the saving is measured against.

Training FLOPs per token and serving FLOPs per token come from the plan's FlopCount
(scaling.base.flops: the encoder-decoder formulas of scaling.base.shapes, tabulated over the
size rule's shapes and interpolated in log N, or 6N and 2N). Inference tokens count input and output: a request reads
input_len tokens through the encoder once and generates output_len tokens with the decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scaling.base.errors import UserError
from scaling.plan.training import FlopModel, Law, _ci

# The search runs in x = ln(N / N_floor), where N_floor is the size whose A/N^alpha alone
# uses up the loss budget (D -> infinity there). The optimum can sit anywhere from just above
# the floor (huge inference) to ~10x it (Chinchilla's), so the bracketing grid is uniform in
# ln x: fine near the floor, coarse far from it.
_X_LO, _X_HI, _GRID = 1e-7, 6 * math.log(10), 481


@dataclass(frozen=True)
class Serving:
    """What the model will be asked to do once trained."""

    tokens: float            # inference tokens over the model's life, input + output
    input_len: int = 512     # per request: tokens the encoder reads once
    output_len: int = 128    # ... and tokens the decoder generates

    def __post_init__(self):
        if not (self.tokens >= 0 and math.isfinite(self.tokens)):
            raise UserError(f"--inference-tokens: must be a non-negative number, got {self.tokens}")
        if self.input_len < 0 or self.output_len < 1:
            raise UserError(f"--input-len/--output-len: need input >= 0 and output >= 1 tokens per request, "
                            f"got {self.input_len}/{self.output_len}")

    @property
    def requests(self) -> float:
        return self.tokens / (self.input_len + self.output_len)


def tokens_at_loss(law: Law, n, target, point: bool = True) -> np.ndarray:
    """D that brings a model of N parameters to the target loss, per parameter set; NaN
    where N alone cannot get there (A/N^alpha >= target - E)."""
    E, A, B, al, be = law.arrays(point)
    gap = np.asarray(target, float).reshape(-1, 1) - E - A / np.asarray(n, float) ** al
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(gap > 0, (B / np.where(gap > 0, gap, 1.0)) ** (1.0 / be), np.nan)


def compute_of(flop: FlopModel, serving: Serving, n, d, shape=None):
    """(training FLOPs, inference FLOPs) of N parameters trained on D tokens, then served; of
    `shape` itself when given (a plan's model: its own formulas, as its bill counts it)."""
    if shape is not None and not flop.is_power:
        per_request = shape.inference_flops(serving.input_len, serving.output_len)
        return (shape.flops_per_token(flop.seq_len, flop.noise_density, flop.clm_ratio) * np.asarray(d, float),
                per_request / (serving.input_len + serving.output_len) * serving.tokens)
    train = flop.per_token(n) * d
    inf = flop.inference_per_token(n, serving.input_len, serving.output_len) * serving.tokens
    return train, inf


def least_compute(law: Law, flop: FlopModel, target, serving: Serving, point: bool = True,
                  inference_weight: float = 1.0, iters: int = 90):
    """Per parameter set: the N (and D on the iso-loss curve) minimising training +
    inference_weight x inference FLOPs at the target loss (a scalar or one per set).

    A grid over ln(N/N_floor) brackets the minimum; a batched golden-section search (what
    scipy's bounded minimize_scalar does for one problem, here for every bootstrap sample at
    once) refines it. Returns dict of [S] arrays: params, tokens, train, inference, ok
    (target reachable), at_edge (minimum on the grid's far edge)."""
    E, A, B, al, be = law.arrays(point)
    S = E.shape[0]
    t = np.broadcast_to(np.asarray(target, float).reshape(-1, 1), (S, 1))
    ok = (t > E)[:, 0] & np.isfinite(t[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_floor = np.where(ok, np.log(A[:, 0]) - np.log(np.where(ok, t[:, 0] - E[:, 0], 1.0)), 0.0) / al[:, 0]

    def total(u):                       # u = ln x = ln ln(N / N_floor), shape [S, G]
        n = np.exp(log_floor[:, None] + np.exp(u))
        d = tokens_at_loss(law, n, t[:, 0], point)
        tr, inf = compute_of(flop, serving, n, d)
        with np.errstate(invalid="ignore"):
            return tr + inference_weight * inf, n, d, tr, inf

    ug = np.linspace(math.log(_X_LO), math.log(_X_HI), _GRID)[None, :].repeat(S, 0)
    f, *_ = total(ug)
    f = np.where(np.isfinite(f), f, np.inf)
    j = np.argmin(f, axis=1)
    rows = np.arange(S)
    a = ug[rows, np.maximum(j - 1, 0)]
    b = ug[rows, np.minimum(j + 1, _GRID - 1)]
    g = (math.sqrt(5) - 1) / 2
    c, d_ = b - g * (b - a), a + g * (b - a)
    fc, fd = total(c[:, None])[0][:, 0], total(d_[:, None])[0][:, 0]
    for _ in range(iters):
        left = fc < fd                  # the minimum lies in [a, d]; else in [c, b]
        a, b = np.where(left, a, c), np.where(left, d_, b)
        # One new evaluation per step: the kept interior point takes the other's role.
        x = np.where(left, b - g * (b - a), a + g * (b - a))
        fx = total(x[:, None])[0][:, 0]
        c, d_ = np.where(left, x, d_), np.where(left, c, x)
        fc, fd = np.where(left, fx, fd), np.where(left, fc, fx)
    u = 0.5 * (a + b)
    _, n, d, tr, inf = (v[:, 0] for v in total(u[:, None]))
    nan = np.where(ok, 1.0, np.nan)
    return {"params": n * nan, "tokens": d * nan, "train": tr * nan, "inference": inf * nan,
            "ok": ok, "at_edge": ok & (j == _GRID - 1)}


def _sum_bills(a: dict, b: dict) -> dict:
    return {gpu: {k: a[gpu][k] + b[gpu][k] for k in a[gpu]} for gpu in a}


def _entry(flop: FlopModel, serving: Serving, cost, n: float, d: float, shape=None) -> dict:
    """One model's whole bill: training, serving, and their sum, in FLOPs and per GPU."""
    tr, inf = (float(v) for v in compute_of(flop, serving, n, d, shape))
    bt, bi = cost.bill(tr), cost.bill(inf, inference=True)
    return {"params": n, "tokens": d, "tokens_per_param": d / n, "train_flops": tr, "inference_flops": inf,
            "total_flops": tr + inf, "cost": {"train": bt, "inference": bi, "total": _sum_bills(bt, bi)}}


def _saving(ref: dict, new: dict) -> dict:
    """What `new` saves against `ref` (positive: cheaper), in FLOPs and on each GPU."""
    out = {"flops": ref["total_flops"] - new["total_flops"],
           "flops_pct": 100.0 * (1.0 - new["total_flops"] / ref["total_flops"]), "by_gpu": {}}
    for gpu, rb in ref["cost"]["total"].items():
        nb = new["cost"]["total"][gpu]
        out["by_gpu"][gpu] = {**{k: rb[k] - nb[k] for k in rb},
                              "pct": 100.0 * (1.0 - nb["gpu_hours"] / rb["gpu_hours"])}
    return out


def inference_plan(law: Law, flop: FlopModel, cost, serving: Serving, target: float, *,
                   target_samples=None, target_from: str = "given", objective: str = "flops",
                   plan: tuple | None = None) -> dict:
    """The `inference` record of `scaling plan`: the model of least training + inference
    compute at the target loss, the Chinchilla-optimal model of the same loss, the given
    plan (if any: (N, D), or (N, D, its shape) to bill the shape's own FLOPs) served the same
    way, and the savings. target_samples (one target per bootstrap sample, e.g. each sample's
    own loss for the plan) gives the intervals."""
    if objective not in ("flops", "gpu-hours"):
        raise UserError(f"--objective: expected flops or gpu-hours, got {objective!r}")
    E = law.params["E"]
    if not target > E:
        raise UserError(f"target loss {target:.4g} is not above the law's irreducible loss E = {E:.4g}: "
                        "no model reaches it")
    # Minimising GPU-hours rather than FLOPs weighs serving FLOPs by its (often lower) MFU.
    weight = cost.mfu / cost.inference_mfu if objective == "gpu-hours" else 1.0
    warnings = []
    best = least_compute(law, flop, target, serving, inference_weight=weight)
    chin = least_compute(law, flop, target, Serving(0.0, serving.input_len, serving.output_len))
    if best["at_edge"][0] or chin["at_edge"][0]:
        warnings.append("the least-compute N lies at the edge of the searched range; the law is degenerate")
    opt = _entry(flop, serving, cost, float(best["params"][0]), float(best["tokens"][0]))
    ref = _entry(flop, serving, cost, float(chin["params"][0]), float(chin["tokens"][0]))
    out = {"target_loss": float(target), "target_from": target_from, "objective": objective,
           "inference_tokens": serving.tokens, "input_len": serving.input_len, "output_len": serving.output_len,
           "requests": serving.requests,
           "inference_flops_per_token": {
               "optimal": float(flop.inference_per_token(opt["params"], serving.input_len, serving.output_len)),
               "chinchilla": float(flop.inference_per_token(ref["params"], serving.input_len, serving.output_len))},
           "optimal": opt, "chinchilla": ref, "saving": _saving(ref, opt)}
    if plan is not None:
        p = _entry(flop, serving, cost, float(plan[0]), float(plan[1]), plan[2] if len(plan) > 2 else None)
        p["loss"] = float(law.loss(plan[0], plan[1])[0, 0])
        out["plan"] = p
        out["plan_saving"] = _saving(ref, p)

    if target_samples is not None and len(law.samples) > 1:
        ts = np.asarray(target_samples, float)
        bs = least_compute(law, flop, ts, serving, point=False, inference_weight=weight)
        cs = least_compute(law, flop, ts, Serving(0.0, serving.input_len, serving.output_len), point=False)
        n_bad = int((~bs["ok"]).sum())
        if n_bad:
            warnings.append(f"{n_bad} of {len(ts)} bootstrap samples cannot reach the target loss "
                            "(left out of the intervals)")
        c_tr, c_inf = compute_of(flop, serving, cs["params"], cs["tokens"])
        c_tot = c_tr + c_inf
        b_tot = bs["train"] + bs["inference"]
        opt.update(params_ci=_ci(bs["params"]), tokens_ci=_ci(bs["tokens"]),
                   tokens_per_param_ci=_ci(bs["tokens"] / bs["params"]), train_flops_ci=_ci(bs["train"]),
                   inference_flops_ci=_ci(bs["inference"]), total_flops_ci=_ci(b_tot))
        ref.update(params_ci=_ci(cs["params"]), tokens_ci=_ci(cs["tokens"]),
                   tokens_per_param_ci=_ci(cs["tokens"] / cs["params"]), train_flops_ci=_ci(c_tr),
                   inference_flops_ci=_ci(c_inf), total_flops_ci=_ci(c_tot))
        with np.errstate(invalid="ignore", divide="ignore"):
            out["saving"]["flops_ci"] = _ci(c_tot - b_tot)
            out["saving"]["flops_pct_ci"] = _ci(100.0 * (1.0 - b_tot / c_tot))
            if plan is not None:
                p_tot = sum(compute_of(flop, serving, plan[0], plan[1], plan[2] if len(plan) > 2 else None))
                out["plan_saving"]["flops_pct_ci"] = _ci(100.0 * (1.0 - float(p_tot) / c_tot))
    out["warnings"] = warnings
    return out


def cost_curve(law: Law, flop: FlopModel, serving: Serving, target: float, record: dict, n_points: int = 200) -> dict:
    """Training, inference and total FLOPs against N along the iso-loss curve, for the figure:
    from just above the floor to well past the Chinchilla-optimal N (and the plan's)."""
    ns = [record["optimal"]["params"], record["chinchilla"]["params"]]
    if "plan" in record:
        ns.append(record["plan"]["params"])
    floor = (law.params["A"] / (target - law.params["E"])) ** (1.0 / law.params["alpha"])
    lo = max(floor * 1.02, min(ns) / 10.0)
    n = np.geomspace(lo, max(ns) * 10.0, n_points)
    d = tokens_at_loss(law, n, target)[0]
    tr, inf = compute_of(flop, serving, n, d)
    return {"params": n, "tokens": d, "train": tr, "inference": inf, "total": tr + inf, "loss": target,
            "inference_tokens": serving.tokens, "optimal_params": record["optimal"]["params"],
            "chinchilla_params": record["chinchilla"]["params"],
            "plan_params": record["plan"]["params"] if "plan" in record else None}
