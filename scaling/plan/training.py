"""From a fitted law to a training plan: predicted loss, compute, the optimum, the bill.

The law is Approach 3's L(N, D) = E + A/N^alpha + B/D^beta, from `scaling fit --out` (with
its bootstrap samples, which carry the intervals through every number here) or, without a
fit, the default below. Compute is counted by a `scaling.base.flops.FlopCount`: the fit's own
count (fit.json's `flop_count`) unless the plan states one, else the encoder-decoder FLOP
formula (training FLOPs per source token under the AlexaTM objective, a function of the
model's shape), so "the compute-optimal N for this compute" is found numerically: along the
curve D = C / flops_per_token(N), the N of least loss (`scaling.base.allocation`, the function
the fit's derived quantities and the figures call too). 6ND is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.base.allocation import compute_optimal, tokens_for_optimal
from scaling.base.config import parse_count, read_toml
from scaling.base.cost import alexatm_reported
from scaling.base.errors import UserError
from scaling.base.flops import FlopCount
from scaling.base.intervals import percentile_interval

PARAMS = ("E", "A", "B", "alpha", "beta")

# Default law: our Approach 3 refit of the 240 Chinchilla points (Epoch AI's digitised
# Figure 4), the plain grid fit of the paper's recipe (Huber sum 1.01827e-3). Its bootstrap
# (1,000 resamples) is kept as the mean and covariance of (log A, log B, log E, alpha, beta),
# enough to draw intervals from without shipping the data.
DEFAULT_LAW = {"E": 1.817218107975706, "A": 477.82591452721573, "B": 2143.4174620911435,
               "alpha": 0.3473105045460707, "beta": 0.3671724348336812}
DEFAULT_LAW_NOTE = ("no --fit given: using the Approach 3 refit of Chinchilla's 240 points (E 1.8172, "
                    "A 477.8, B 2143, alpha 0.3473, beta 0.3672); its losses belong to Chinchilla's data "
                    "and tokenizer, not this lab's; fit your own runs with `scaling fit --out fit.json`")
_DEFAULT_COV = np.array([
    [6.431827e-02, -2.609129e-02, 2.073054e-03, 3.827864e-03, -1.304242e-03],
    [-2.609129e-02, 1.561188e-01, 3.151935e-03, -1.621902e-03, 7.648779e-03],
    [2.073054e-03, 3.151935e-03, 1.848718e-04, 1.222701e-04, 1.539451e-04],
    [3.827864e-03, -1.621902e-03, 1.222701e-04, 2.281583e-04, -8.114595e-05],
    [-1.304242e-03, 7.648779e-03, 1.539451e-04, -8.114595e-05, 3.749934e-04]])


@dataclass
class Law:
    """Point parameters plus samples [S, 5] (E, A, B, alpha, beta) for intervals."""

    params: dict
    samples: np.ndarray
    source: str
    note: str | None = None
    fitted_range: dict | None = None   # the fit's data: {"params": [lo, hi], "flops": [lo, hi], ...}
    params_column: str = "params"      # which N the law was fitted on (params_nonembed: Kaplan's)
    flop_count: FlopCount | None = None  # how the fit counted its runs' compute (None: the default law)
    task: dict | None = None           # the fit's two-step task law (`scaling fit --target`), if it has one

    @classmethod
    def default(cls, n_samples: int = 1000, seed: int = 0) -> "Law":
        rng = np.random.default_rng(seed)
        p = DEFAULT_LAW
        mean = np.array([math.log(p["A"]), math.log(p["B"]), math.log(p["E"]), p["alpha"], p["beta"]])
        x = rng.multivariate_normal(mean, _DEFAULT_COV, size=n_samples)
        samples = np.column_stack([np.exp(x[:, 2]), np.exp(x[:, 0]), np.exp(x[:, 1]), x[:, 3], x[:, 4]])
        return cls(dict(p), samples, "default: Chinchilla 240-point refit", DEFAULT_LAW_NOTE)

    @classmethod
    def from_fit_file(cls, path: str | Path) -> "Law":
        # Here, not above: scaling.fit loads polars, which a plan from the default law (no --fit) never needs.
        from scaling.fit.report import law_from_fit, read_fit_file

        p = Path(path)
        fit = read_fit_file(p)
        try:
            params, samples = law_from_fit(fit)
        except UserError as e:
            raise UserError(f"{p}: {e}") from None
        note = None
        if fit.get("approach3", {}).get("degenerate"):
            note = f"{p}: this law is degenerate on its own data ({fit['approach3']['degenerate']}); read it as a curve fit, not a law"
        if samples is None or len(samples) < 20:
            have = 0 if samples is None else len(samples)
            note = (note + "; " if note else "") + (
                f"{p} holds {have} usable bootstrap samples (fewer than 20): intervals are not available"
                + ("" if have else " (fit with --bootstrap N)"))
            samples = np.array([[params[k] for k in PARAMS]])
        note = _target_note(fit, p, note)
        rng = fit.get("range") if isinstance(fit.get("range"), dict) else None
        return cls(params, samples, str(p), note, rng, str(fit.get("params_column") or "params"), _fit_count(fit),
                   fit.get("task") if isinstance(fit.get("task"), dict) else None)

    def count_for(self, stated: FlopCount | None) -> FlopCount:
        """The plan's FLOP count: the one stated, else the fit's own (so that the plan, the fit's
        derived quantities and the figures count compute one way), else the encoder-decoder
        formula with AlexaTM's vocabulary and window."""
        if stated is not None:
            return stated
        if self.flop_count is not None:
            return FlopCount(**{**vars(self.flop_count), "warnings": []})
        return FlopCount("encdec")

    @property
    def nonembed(self) -> bool:
        return "nonembed" in self.params_column

    def reach(self, params: float | None, compute: float) -> dict | None:
        """How far a plan lies beyond the runs the law was fitted on (None for the default law)."""
        if not self.fitted_range:
            return None
        n_hi, c_hi = self.fitted_range["params"][1], self.fitted_range["flops"][1]
        return {"fitted_max_params": n_hi, "fitted_max_flops": c_hi,
                "params_factor": None if params is None else float(params / n_hi),
                "flops_factor": float(compute / c_hi)}

    def arrays(self, point: bool):
        """Parameters as column arrays [S, 1] (or [1, 1] for the point estimate)."""
        s = np.array([[self.params[k] for k in PARAMS]]) if point else self.samples
        return [s[:, i:i + 1] for i in range(5)]

    def loss(self, n, d, point: bool = True) -> np.ndarray:
        """L(N, D) = E + A/N^alpha + B/D^beta, broadcast over n and d: at the point estimate, or
        (point=False) one value per bootstrap sample along a leading axis."""
        E, A, B, al, be = self.arrays(point)
        with np.errstate(over="ignore"):  # a degenerate law's huge exponent: that term is 0
            return E + A / np.asarray(n, float) ** al + B / np.asarray(d, float) ** be


def _target_note(fit: dict, path: Path, note: str | None) -> str | None:
    """The law's note, and for a fit of another column than the loss (`scaling fit --target`), which."""
    if not fit.get("target"):
        return note
    return (note + "; " if note else "") + (f"{path} is a law of {fit['target']!r} (scaling fit --target), not of "
                                            "the LM loss: the losses below are that column's")


# The FLOP count of a plan: scaling.base.flops.FlopCount, the one count of fits, plans and
# figures. FlopModel("encdec") / FlopModel("6nd", ...) as before.
FlopModel = FlopCount


def _fit_count(fit: dict) -> FlopCount | None:
    """The FLOP count a fit.json recorded (`flop_count`, or approach 3's); None for a record of
    before the kinds, whose count was a power law fitted on its runs."""
    a3 = fit.get("approach3") if isinstance(fit.get("approach3"), dict) else {}
    rec = a3.get("flop_count") or fit.get("flop_count")
    if not isinstance(rec, dict) or "kind" not in rec:
        return None
    try:
        return FlopCount.from_dict(rec)
    except (KeyError, TypeError, ValueError, UserError):
        return None


# ----------------------------------------------------------------------------- optimisation

def _rows(law: Law, point: bool) -> np.ndarray:
    return np.array([[law.params[k] for k in PARAMS]]) if point else law.samples


def optimum(law: Law, compute, flop: FlopCount, point: bool = True):
    """For each parameter set: the N (and D = C / per_token(N)) of least loss at this compute
    (a scalar, or one per parameter set), by `scaling.base.allocation.compute_optimal` (the
    function the fit's derived quantities and the figures call): closed form under a power-law
    count, the root of its first-order condition under the encoder-decoder one. Returns N, D,
    loss, at_edge [S] (at_edge: the optimum lies outside 7 decades around sqrt(C/6), a
    degenerate law)."""
    rows = _rows(law, point)
    c = np.broadcast_to(np.asarray(compute, float).reshape(-1, 1), (len(rows), 1))
    al = compute_optimal(rows, c, flop)
    return al.n[:, 0], al.d[:, 0], al.loss[:, 0], al.at_edge[:, 0]


def efficient_frontier(law: Law, flop: FlopCount, n_range, d_range, n_points: int = 120):
    """(N, D) of the compute-optimal models under this FLOP count, over the computes that
    keep them inside the N-D window (for the N-D plane figure)."""
    lo = float(flop.per_token(n_range[0]) * d_range[0])
    hi = float(flop.per_token(n_range[1]) * d_range[1])
    al = compute_optimal(law.params, np.geomspace(lo, hi, n_points)[None, :], flop)
    n, d = al.n[0], al.d[0]
    keep = (n >= n_range[0]) & (n <= n_range[1]) & (d >= d_range[0]) & (d <= d_range[1])
    return n[keep], d[keep]


def tokens_for_params(law: Law, n: float, flop: FlopCount, point: bool = True):
    """The D that makes N compute-optimal, per parameter set: the first-order condition of the
    optimum solved for the compute at this N (`scaling.base.allocation.tokens_for_optimal`)."""
    return tokens_for_optimal(_rows(law, point), float(n), flop)[:, 0]


def _ci(v) -> list:
    return percentile_interval(v, 20)   # fewer draws than that make no interval worth printing


def planned_model(flop: FlopCount, n: float):
    """(exact N, training FLOPs per token, shape or None) of the model a plan of size n trains:
    the shape the size rule builds for n under the encoder-decoder count (AlexaTM's 46+32 x
    4096 for "20B", 18.48B parameters), so that loss and compute describe one model; n itself
    and 6N under 6ND. `make_plan` and `compare_plans` both price plans with it."""
    shape = flop.shape(float(n))
    if shape is None:
        return float(n), float(flop.per_token(float(n))), None
    # N as the count reads it (non-embedding under a fit on Kaplan's N): the law's own N.
    return float(flop.n_of(shape)), float(shape.flops_per_token(flop.seq_len, flop.noise_density, flop.clm_ratio)), shape


def make_plan(law: Law, flop: FlopCount, cost, *, params=None, tokens=None, compute=None) -> dict:
    """The `scaling plan` record. Give params and tokens, or compute alone, or params alone."""
    warnings = list(flop.warnings) + ([law.note] if law.note else [])
    if law.nonembed and not flop.is_power and not flop.nonembed:
        # Not converted: the optimum search and the FLOP count are in total N. At 20B the two
        # counts differ by the embeddings' share (18.48B total, 17.86B without them). A 6ND or
        # power count fitted on the law's own runs already reads N as the law does.
        warnings.append(f"the law was fitted on non-embedding N ({law.params_column}); this plan reads N as the "
                        "total count, off by the embeddings' share of the model")
    if params is not None and tokens is not None:
        if compute is not None:
            raise UserError("give --params and --tokens, or --compute, not all three")
        mode = "given"
    elif compute is not None:
        if params is not None or tokens is not None:
            raise UserError("--compute goes alone (the plan is then the compute-optimal one)")
        mode = "compute"
    elif params is not None:
        mode = "params"
    else:
        raise UserError("give --params and --tokens, --compute, or --params alone")
    samples = len(law.samples) > 1

    if mode == "compute":
        c = float(compute)
        n_plan, d_plan = None, None
    else:
        # The model planned is the shape the size rule builds for the target (AlexaTM's
        # 46+32 x 4096 for "20B" has 18.48B parameters): its exact count is the N the law
        # is evaluated at, and its own formula the compute, so loss and bill describe one model.
        n_plan, per_token, shape = planned_model(flop, float(params))
        if mode == "params":
            d_plan = float(tokens_for_params(law, n_plan, flop, point=True)[0])
        else:
            d_plan = float(tokens)
        c = float(per_token * d_plan)
    n_o, d_o, l_o, edge = optimum(law, c, flop, point=True)
    if edge[0]:
        warnings.append("the compute-optimal N lies at the edge of the searched range; the law is degenerate")
    opt = {"params": float(n_o[0]), "tokens": float(d_o[0]), "tokens_per_param": float(d_o[0] / n_o[0]),
           "loss": float(l_o[0])}
    if samples:
        ns, ds, ls, _ = optimum(law, c, flop, point=False)
        opt.update(params_ci=_ci(ns), tokens_ci=_ci(ds), tokens_per_param_ci=_ci(ds / ns), loss_ci=_ci(ls))
    out = {"law": {**law.params, "source": law.source}, "flop_model": flop.describe(),
           "assumptions": cost.to_dict(), "compute": c, "optimal": opt}
    if n_plan is not None:
        plan = {"params": n_plan, "params_target": float(params), "tokens": d_plan, "tokens_per_param": d_plan / n_plan,
                "loss": float(law.loss(n_plan, d_plan)[0, 0]),
                "flops": c, "flops_encdec": c if flop.kind == "encdec" else None,
                "flops_6nd": 6.0 * (n_plan if shape is None else shape.n_params()) * d_plan}
        if shape is not None:
            plan["shape"] = shape.describe()
        if samples:
            plan["loss_ci"] = _ci(law.loss(n_plan, d_plan, point=False)[:, 0])
        gap = plan["loss"] - opt["loss"]
        plan["loss_given_up"] = gap
        if samples:
            plan["loss_given_up_ci"] = _ci(law.loss(n_plan, d_plan, point=False)[:, 0] - ls)
        if mode == "params" and samples:
            plan["tokens_ci"] = _ci(tokens_for_params(law, n_plan, flop, point=False))
        out["plan"] = plan
    out["cost"] = cost.bill(c)
    out["alexatm_reported"] = alexatm_reported(cost)
    out["mode"] = mode
    out["warnings"] = warnings
    return out


# ----------------------------------------------------------------------------- famous plans

FAMOUS = [  # (name, parameters, training tokens) as published
    ("GPT-3", 175e9, 300e9),
    ("MT-NLG", 530e9, 270e9),
    ("PaLM", 540e9, 780e9),
    ("Chinchilla", 70e9, 1.4e12),
    ("AlexaTM", 20e9, 1e12),
]


def read_plans_toml(path: str | Path) -> list:
    """[[plan]] tables with name, params, tokens (numbers or strings like "20B")."""
    p = Path(path)
    doc = read_toml(p, "plans file")
    out = []
    for i, t in enumerate(doc.get("plan", [])):
        if not isinstance(t, dict) or not {"name", "params", "tokens"} <= set(t):
            raise UserError(f"{p}: [[plan]] #{i + 1} needs name, params and tokens")
        out.append((str(t["name"]), float(parse_count(t["params"], f"{p}: plan {t['name']} params")),
                    float(parse_count(t["tokens"], f"{p}: plan {t['name']} tokens"))))
    if not out:
        raise UserError(f"{p}: no [[plan]] tables")
    return out


def compare_plans(law: Law, flop: FlopCount, plans: list) -> list:
    """Each plan against the compute-optimal allocation of its own compute under the law."""
    rows = []
    samples = len(law.samples) > 1
    for name, target, d in plans:
        n, per_token, shape = planned_model(flop, target)
        c = float(per_token * d)
        n_o, d_o, l_o, _ = optimum(law, c, flop)
        loss = float(law.loss(n, d)[0, 0])
        row = {"name": name, "params": n, "params_target": float(target), "tokens": d, "tokens_per_param": d / n, "flops": c,
               "flops_6nd": 6 * (n if shape is None else shape.n_params()) * d, "loss": loss, "optimal_params": float(n_o[0]),
               "optimal_tokens": float(d_o[0]), "optimal_tokens_per_param": float(d_o[0] / n_o[0]),
               # > 1: more tokens per parameter than optimal (over-trained, smaller model).
               "overtrained": float((d / n) / (d_o[0] / n_o[0])),
               "loss_given_up": loss - float(l_o[0])}
        if samples:
            ns, ds, ls, _ = optimum(law, c, flop, point=False)
            row.update(optimal_params_ci=_ci(ns), optimal_tokens_ci=_ci(ds),
                       loss_given_up_ci=_ci(law.loss(n, d, point=False)[:, 0] - ls))
        rows.append(row)
    return rows
