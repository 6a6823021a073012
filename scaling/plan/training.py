"""From a fitted law to a training plan: predicted loss, compute, the optimum, the bill.

The law is Approach 3's L(N, D) = E + A/N^alpha + B/D^beta, from `scaling fit --out` (with
its bootstrap samples, which carry the intervals through every number here) or, without a
fit, the default below. Compute is counted by the encoder-decoder FLOP formula of
scaling.train.model (training FLOPs per source token under the AlexaTM objective, a function of
the model's shape), so "the compute-optimal N for this compute" is found numerically: along
the curve D = C / flops_per_token(N), the N of least loss. 6ND is reported beside it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaling.base.config import parse_count, read_toml
from scaling.base.cost import alexatm_reported
from scaling.base.errors import UserError
from scaling.base.intervals import percentile_interval
from scaling.base.shapes import ModelConfig

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
        rng = fit.get("range") if isinstance(fit.get("range"), dict) else None
        return cls(params, samples, str(p), note, rng, str(fit.get("params_column") or "params"))

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
        E, A, B, al, be = self.arrays(point)
        with np.errstate(over="ignore"):  # a degenerate law's huge exponent: that term is 0
            return E + A / np.asarray(n, float) ** al + B / np.asarray(d, float) ** be


@dataclass
class FlopModel:
    """Training FLOPs per token as a function of N: the encoder-decoder formula of the shape
    scaling.train.model's size rule picks for N ('encdec'), or 6 N ('6nd')."""

    kind: str = "encdec"
    seq_len: int = 1024
    noise_density: float = 0.15
    vocab_size: int = 150_000          # AlexaTM's SentencePiece vocabulary
    warnings: list = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in ("encdec", "6nd"):
            raise UserError(f"--flops: expected encdec or 6nd, got {self.kind!r}")

    def per_token(self, n) -> np.ndarray:
        n = np.asarray(n, float)
        if self.kind == "6nd":
            return 6.0 * n
        ln, lk = _kappa_table(self.seq_len, self.noise_density, self.vocab_size)
        # FLOPs per token per parameter varies slowly with N (attention and LM head shares):
        # interpolate it in log N between the shapes of the size rule; constant beyond them.
        return n * np.exp(np.interp(np.log(n), ln, lk))

    def inference_per_token(self, n, input_len: int, output_len: int) -> np.ndarray:
        """Forward FLOPs per inference token (input + output) for requests of input_len
        tokens in and output_len out: the encoder-decoder's own inference formula, or 2 N
        (a forward pass, Sardana et al.'s count) under 6ND."""
        n = np.asarray(n, float)
        if self.kind == "6nd":
            return 2.0 * n
        ln, lk = _serve_table(int(input_len), int(output_len), self.seq_len, self.vocab_size)
        return n * np.exp(np.interp(np.log(n), ln, lk))

    def shape(self, n: float):
        if self.kind == "6nd":
            return None
        try:
            return ModelConfig.from_params(int(n), vocab_size=self.vocab_size, max_len=max(self.seq_len + 1, 1024))
        except UserError:
            return None

    def describe(self) -> str:
        if self.kind == "6nd":
            return "6 N D"
        return (f"encoder-decoder formula (scaling.base.shapes), seq_len {self.seq_len}, noise {self.noise_density:g}, "
                f"vocab {self.vocab_size}")


@functools.lru_cache(maxsize=8)
def _size_rule_shapes(vocab: int, max_len: int) -> tuple:
    """The shapes the size rule picks on a log grid of N (ModelConfig.from_params costs tens
    of ms, so every per-token FLOP table below is built from this one cached list)."""
    shapes = []
    for n in np.geomspace(1e7, 3e12, 23):
        try:
            shapes.append(ModelConfig.from_params(int(n), vocab_size=vocab, max_len=max_len))
        except UserError:
            continue
    if len(shapes) < 2:
        raise UserError(f"no model shape fits vocabulary {vocab}: cannot count encoder-decoder FLOPs")
    return tuple(sorted(shapes, key=lambda c: c.n_params()))


def _per_param_table(shapes: tuple, flops_of) -> tuple:
    """(log N, log(FLOPs per token / N)) over the shapes: interpolated in log N by callers."""
    ln = np.array([math.log(c.n_params()) for c in shapes])
    lk = np.array([math.log(flops_of(c) / c.n_params()) for c in shapes])
    return ln, lk


@functools.lru_cache(maxsize=8)
def _kappa_table(seq_len: int, noise: float, vocab: int):
    shapes = _size_rule_shapes(vocab, max(seq_len + 1, 1024))
    return _per_param_table(shapes, lambda c: c.flops_per_token(seq_len, noise))


@functools.lru_cache(maxsize=16)
def _serve_table(input_len: int, output_len: int, seq_len: int, vocab: int):
    # Serving FLOPs per inference token (input and output tokens both counted): one request
    # encodes input_len tokens once and generates output_len tokens with a KV cache.
    shapes = _size_rule_shapes(vocab, max(seq_len + 1, 1024))
    return _per_param_table(shapes, lambda c: c.inference_flops(input_len, output_len) / (input_len + output_len))


# ----------------------------------------------------------------------------- optimisation

def optimum(law: Law, compute, flop: FlopModel, point: bool = True, n_grid: int = 1401):
    """For each parameter set: the N (and D = C / per_token(N)) of least loss at this compute
    (a scalar, or one per parameter set). A log grid of N over 7 decades around sqrt(C/6),
    refined by the parabola through the best grid point. Returns N, D, loss, at_edge [S]."""
    E, A, B, al, be = law.arrays(point)
    S = E.shape[0]
    c = np.broadcast_to(np.asarray(compute, float).reshape(-1, 1), (S, 1))
    lg = 0.5 * np.log10(c / 6.0) + np.linspace(-4.0, 3.0, n_grid)[None, :]   # [S, G]
    n = 10.0 ** lg
    d = c / flop.per_token(n)
    with np.errstate(over="ignore"):  # a degenerate law's huge exponent: that term is 0
        L = E + A / n ** al + B / d ** be
    j = np.argmin(L, axis=1)
    i = np.clip(j, 1, n_grid - 2)
    rows = np.arange(S)
    y0, y1, y2 = L[rows, i - 1], L[rows, i], L[rows, i + 1]
    den = y0 - 2 * y1 + y2
    shift = np.where(den > 0, 0.5 * (y0 - y2) / np.where(den > 0, den, 1.0), 0.0)
    step = 7.0 / (n_grid - 1)
    n_opt = 10.0 ** (lg[rows, i] + np.clip(shift, -1, 1) * step)
    d_opt = c[:, 0] / flop.per_token(n_opt)
    with np.errstate(over="ignore"):
        l_opt = E[:, 0] + A[:, 0] / n_opt ** al[:, 0] + B[:, 0] / d_opt ** be[:, 0]
    return n_opt, d_opt, l_opt, (j == 0) | (j == n_grid - 1)


def efficient_frontier(law: Law, flop: FlopModel, n_range, d_range, n_points: int = 120):
    """(N, D) of the compute-optimal models under this FLOP count, over the computes that
    keep them inside the N-D window (for the N-D plane figure)."""
    lo = float(flop.per_token(n_range[0]) * d_range[0])
    hi = float(flop.per_token(n_range[1]) * d_range[1])
    pts = [optimum(law, c, flop, n_grid=701)[:2] for c in np.geomspace(lo, hi, n_points)]
    n = np.array([p[0][0] for p in pts])
    d = np.array([p[1][0] for p in pts])
    keep = (n >= n_range[0]) & (n <= n_range[1]) & (d >= d_range[0]) & (d <= d_range[1])
    return n[keep], d[keep]


def tokens_for_params(law: Law, n: float, flop: FlopModel, point: bool = True, iters: int = 40):
    """The D that makes N compute-optimal, per parameter set: bisection on the compute
    C = per_token(N) D, since the optimal N grows with C."""
    S = 1 if point else len(law.samples)
    lo = np.full(S, math.log(1e-2))    # log tokens per parameter
    hi = np.full(S, math.log(1e5))
    pt = float(flop.per_token(n))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        n_opt = optimum(law, pt * n * np.exp(mid), flop, point, n_grid=701)[0]
        bigger = n_opt > n
        hi = np.where(bigger, mid, hi)
        lo = np.where(bigger, lo, mid)
    return n * np.exp(0.5 * (lo + hi))


def _ci(v) -> list:
    return percentile_interval(v, 20)   # fewer draws than that make no interval worth printing


def planned_model(flop: FlopModel, n: float):
    """(exact N, training FLOPs per token, shape or None) of the model a plan of size n trains:
    the shape the size rule builds for n under the encoder-decoder count (AlexaTM's 46+32 x
    4096 for "20B", 18.48B parameters), so that loss and compute describe one model; n itself
    and 6N under 6ND. `make_plan` and `compare_plans` both price plans with it."""
    shape = flop.shape(float(n))
    if shape is None:
        return float(n), float(flop.per_token(float(n))), None
    return float(shape.n_params()), float(shape.flops_per_token(flop.seq_len, flop.noise_density)), shape


def make_plan(law: Law, flop: FlopModel, cost, *, params=None, tokens=None, compute=None) -> dict:
    """The `scaling plan` record. Give params and tokens, or compute alone, or params alone."""
    warnings = list(flop.warnings) + ([law.note] if law.note else [])
    if law.nonembed:
        # Not converted: the optimum search and the FLOP count are in total N. At 20B the two
        # counts differ by the embeddings' share (18.48B total, 17.86B without them).
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
                "flops_6nd": 6.0 * n_plan * d_plan}
        if shape is not None:
            plan["shape"] = shape.describe()
        if samples:
            plan["loss_ci"] = _ci(law.loss(n_plan, d_plan, point=False)[:, 0])
        gap = plan["loss"] - opt["loss"]
        plan["loss_given_up"] = gap
        if samples:
            plan["loss_given_up_ci"] = _ci(law.loss(n_plan, d_plan, point=False)[:, 0] - ls)
        if mode == "params" and samples:
            # Per-sample optimal tokens are a nested search; 200 samples bound its cost.
            sub = Law(law.params, law.samples[:200], law.source)
            plan["tokens_ci"] = _ci(tokens_for_params(sub, n_plan, flop, point=False))
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


def compare_plans(law: Law, flop: FlopModel, plans: list) -> list:
    """Each plan against the compute-optimal allocation of its own compute under the law."""
    rows = []
    samples = len(law.samples) > 1
    for name, target, d in plans:
        n, per_token, _ = planned_model(flop, target)
        c = float(per_token * d)
        n_o, d_o, l_o, _ = optimum(law, c, flop)
        loss = float(law.loss(n, d)[0, 0])
        row = {"name": name, "params": n, "params_target": float(target), "tokens": d, "tokens_per_param": d / n, "flops": c,
               "flops_6nd": 6 * n * d, "loss": loss, "optimal_params": float(n_o[0]),
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
