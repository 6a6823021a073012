"""How training compute is counted: FLOPs per token as a function of N, one count for a fit,
its plan and its figures (torch-free).

A `FlopCount` is one of

- `6nd`: 6 N per token, Chinchilla's C = 6 N D (a table without a flops column, or whose flops
  are 6ND);
- `power`: k N^e per token, a convention stated by the user (or a foreign table's own, when its
  flops follow one exactly);
- `decoder`: the same for the lab's decoder-only family (`ModelConfig(arch="decoder")`: the
  sequence it reads, the encoder input then the decoder's; `clm_window` when its runs are causal
  LM alone on whole windows, `scaling.base.shapes.run_lengths`);
- `encdec`: this lab's encoder-decoder formula (`ModelConfig.flops_per_token`: every matmul,
  attention over the window, the LM head) of the shape the size rule builds for N with the
  runs' vocabulary and window (`scaling.base.shapes.model_config`), N counted in total or in
  non-embedding parameters (the law's N).

The encoder-decoder count is the formula of the size rule's shapes, tabulated on a log grid of
N (`GRID`: 8 per decade, every size the rule can build, 1e4 to 3e12 parameters), and read
between them off the smooth trend of log(FLOPs per token per parameter) in log N: a
least-squares natural cubic spline with one knot per decade. The shapes zigzag about that
trend by a few percent (depth and width step, and the attention and LM-head shares with them;
up to ~10% for long windows and large vocabularies); following the trend, not each step, is
what lets the optimum of a law along D = C / per_token(N) move smoothly with C and its local
slopes be slopes, not steps. Beyond the largest shape the FLOPs per parameter are held. Never
a power law fitted on a few runs and extrapolated: at 2e10 parameters the count is about 5.5
FLOPs per parameter per token for the demo's runs (the encoder sees 85% of the window), 5.7
with AlexaTM's vocabulary and window, as large models do.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from scaling.base.errors import UserError
from scaling.base.shapes import ModelConfig, model_config, positions

KINDS = ("encdec", "decoder", "6nd", "power")
BY_SHAPE = ("encdec", "decoder")   # the kinds that count the size rule's own shapes
# Total parameters tabulated, 8 per decade (the rule builds nothing past ~4e12: 512 layers), and
# the knots of the curve through them, one per decade of N.
GRID = (1e3, 3e12, 8)
KNOTS_PER_DECADE = 1


# ----------------------------------------------------------------------------- the spline

@dataclass(frozen=True)
class _Curve:
    """A natural cubic spline y(x) through knots, held constant outside them (no trend is
    extrapolated); value and first two derivatives, vectorised."""

    x: np.ndarray
    y: np.ndarray
    m: np.ndarray     # second derivatives at the knots

    @classmethod
    def through(cls, x, y) -> "_Curve":
        x, y = np.asarray(x, float), np.asarray(y, float)
        n = len(x)
        m = np.zeros(n)
        if n > 2:
            h = np.diff(x)
            a = np.zeros((n - 2, n - 2))
            i = np.arange(n - 2)
            a[i, i] = 2 * (h[:-1] + h[1:])
            a[i[1:], i[1:] - 1] = h[1:-1]
            a[i[:-1], i[:-1] + 1] = h[1:-1]
            r = 6 * (np.diff(y[1:]) / h[1:] - np.diff(y[:-1]) / h[:-1])
            m[1:-1] = np.linalg.solve(a, r)
        return cls(x, y, m)

    @classmethod
    def smoothing(cls, x, y, knots_per_decade: float) -> "_Curve":
        """The natural cubic spline with knots evenly spaced in x (knots_per_decade per decade
        of e^x) closest to the points (x, y) in least squares: a spline is linear in its knots'
        values, so they are one linear least-squares solve."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        m = max(2, int(round((x[-1] - x[0]) / math.log(10) * knots_per_decade)) + 1)
        if len(x) <= m:
            return cls.through(x, y)
        knots = np.linspace(x[0], x[-1], m)
        basis = np.stack([cls.through(knots, unit)(x, 0)[0] for unit in np.eye(m)], axis=1)
        return cls.through(knots, np.linalg.lstsq(basis, y, rcond=None)[0])

    def __call__(self, x, order: int = 2) -> tuple[np.ndarray, ...]:
        """(y, dy/dx, d2y/dx2) at x; (y,) alone for order 0."""
        x = np.asarray(x, float)
        xs, ys, ms = self.x, self.y, self.m
        if len(xs) == 1:
            return (np.full(x.shape, ys[0]),) + ((np.zeros(x.shape), np.zeros(x.shape)) if order else ())
        xc = np.clip(x, xs[0], xs[-1])             # held constant outside the knots
        j = np.clip(np.searchsorted(xs, xc) - 1, 0, len(xs) - 2)
        x0, x1, h = xs[j], xs[j + 1], xs[j + 1] - xs[j]
        t0, t1 = x1 - xc, xc - x0
        m0, m1 = ms[j], ms[j + 1]
        c0, c1 = ys[j] / h - m0 * h / 6, ys[j + 1] / h - m1 * h / 6
        y = (m0 * t0**3 + m1 * t1**3) / (6 * h) + c0 * t0 + c1 * t1
        if not order:
            return (y,)
        out = (x < xs[0]) | (x > xs[-1])
        dy = (-m0 * t0**2 + m1 * t1**2) / (2 * h) - c0 + c1
        d2 = (m0 * t0 + m1 * t1) / h
        return y, np.where(out, 0.0, dy), np.where(out, 0.0, d2)


# ----------------------------------------------------------------------------- the size rule's shapes

@functools.lru_cache(maxsize=16)
def size_rule_shapes(vocab: int, seq_len: int, tied: bool = True, arch: str = "encdec") -> tuple:
    """The shapes the size rule builds on a log grid of N (GRID) for runs of this window,
    sorted by size: every per-token FLOP table is built from this one cached list
    (`ModelConfig.from_params` costs up to a tenth of a second at large N)."""
    max_len = positions(seq_len, arch)
    lo, hi, k = GRID
    grid = np.geomspace(lo, hi, int(round(k * math.log10(hi / lo))) + 1)
    shapes = {}
    for n in grid:
        try:
            c = ModelConfig.from_params(int(n), vocab_size=vocab, max_len=max_len, tied_embeddings=tied, arch=arch)
        except UserError:
            continue
        shapes[c] = None
    if len(shapes) < 2:
        raise UserError(f"no model shape fits vocabulary {vocab}: cannot count {arch} FLOPs")
    return tuple(sorted(shapes, key=lambda c: c.n_params()))


def _curve_of(shapes: tuple, nonembed: bool, flops_of) -> _Curve:
    """log(FLOPs per token / N) against log N over the shapes (N total or non-embedding): the
    smooth trend through them (`_Curve.smoothing`, KNOTS_PER_DECADE)."""
    pts = sorted((math.log(c.n_params(embeddings=not nonembed)), math.log(flops_of(c) / c.n_params(embeddings=not nonembed)))
                 for c in shapes)
    x, y = [], []
    for a, b in pts:
        if not x or a > x[-1] + 1e-9:
            x.append(a)
            y.append(b)
    return _Curve.smoothing(x, y, KNOTS_PER_DECADE)


@functools.lru_cache(maxsize=32)
def _train_curve(vocab: int, seq_len: int, noise: float, tied: bool, nonembed: bool, arch: str = "encdec",
                 clm_ratio: float = 0.2) -> _Curve:
    return _curve_of(size_rule_shapes(vocab, seq_len, tied, arch), nonembed,
                     lambda c: c.flops_per_token(seq_len, noise, clm_ratio))


@functools.lru_cache(maxsize=32)
def _serve_curve(input_len: int, output_len: int, vocab: int, seq_len: int, tied: bool, nonembed: bool,
                 arch: str = "encdec") -> _Curve:
    # Serving FLOPs per inference token (input and output tokens both counted): one request
    # encodes (a decoder-only model: reads) input_len tokens once and generates output_len
    # tokens with a KV cache.
    return _curve_of(size_rule_shapes(vocab, seq_len, tied, arch), nonembed,
                     lambda c: c.inference_flops(input_len, output_len) / (input_len + output_len))


# ----------------------------------------------------------------------------- the count

@dataclass
class FlopCount:
    """Training FLOPs per token as a function of N (see the module's docstring).

    kind: 'encdec' (this lab's formula by shape: seq_len, noise_density, vocab_size,
    tied_embeddings, and N in non-embedding parameters when `nonembed`), 'decoder' (the same
    for the decoder-only family; `clm_window`: its runs read [CLM] and whole windows, causal
    LM alone), '6nd', or 'power' (k N^e). `warnings` are carried to the plan's output.

    One piece: every method reads the same few fields by kind, and the record fit.json keeps
    (`to_dict`, `from_dict`) sits beside the fields it writes."""

    kind: str = "encdec"
    seq_len: int = 1024
    noise_density: float = 0.15
    vocab_size: int = 150_000          # AlexaTM's SentencePiece vocabulary
    tied_embeddings: bool = True
    nonembed: bool = False             # N is the non-embedding count (Kaplan's), as the law's
    k: float = 6.0                     # 'power': FLOPs per token = k N^e
    e: float = 1.0
    warnings: list = field(default_factory=list, compare=False)
    clm_window: bool = False           # 'decoder': every example a whole window after [CLM]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"--flops: expected encdec, decoder or 6nd (or power), got {self.kind!r}")
        if self.kind == "6nd":
            self.k, self.e = 6.0, 1.0
        if self.kind == "power" and not (self.k > 0 and self.e > 0 and math.isfinite(self.k * self.e)):
            raise UserError(f"a FLOP count k N^e needs k > 0 and e > 0, got k {self.k}, e {self.e}")

    # ------------------------------------------------------------------ per token
    @property
    def is_power(self) -> bool:
        """A power law k N^e (6ND included): the compute-optimal frontier has a closed form."""
        return self.kind not in BY_SHAPE

    @property
    def arch(self) -> str:
        """The arch of the shapes counted (a 'decoder' count's shapes are "decoder": a
        "prefix-lm" shape has the same counts)."""
        return "decoder" if self.kind == "decoder" else "encdec"

    @property
    def clm_ratio(self) -> float:
        """A clm_ratio that gives the count's example lengths (shapes.run_lengths)."""
        return 1.0 if self.kind == "decoder" and self.clm_window else 0.0

    def _curve(self) -> _Curve:
        return _train_curve(int(self.vocab_size), int(self.seq_len), float(self.noise_density),
                            bool(self.tied_embeddings), bool(self.nonembed), self.arch, self.clm_ratio)

    def log_per_param(self, x, order: int = 2) -> tuple[np.ndarray, ...]:
        """h(x) = log(FLOPs per token / N) at x = log N, and its first two derivatives in x
        ((h,) alone for order 0)."""
        x = np.asarray(x, float)
        if self.is_power:
            h = math.log(self.k) + (self.e - 1) * x
            return (h,) + ((np.full(x.shape, self.e - 1.0), np.zeros(x.shape)) if order else ())
        return self._curve()(x, order)

    def per_token(self, n) -> np.ndarray:
        """Training FLOPs per token of a model of N parameters."""
        n = np.asarray(n, float)
        if self.kind == "6nd":
            return 6.0 * n
        if self.kind == "power":
            return self.k * n ** self.e
        return n * np.exp(self.log_per_param(np.log(n), 0)[0])

    def per_param(self, n) -> np.ndarray:
        """Training FLOPs per token per parameter (6 under 6ND)."""
        n = np.asarray(n, float)
        return self.per_token(n) / n

    def inference_per_token(self, n, input_len: int, output_len: int) -> np.ndarray:
        """Forward FLOPs per inference token (input + output) for requests of input_len tokens
        in and output_len out: the encoder-decoder's own inference formula, or 2 N (a forward
        pass, Sardana et al.'s count) under 6ND; a third of the training count under k N^e."""
        n = np.asarray(n, float)
        if self.kind == "6nd":
            return 2.0 * n
        if self.kind == "power":
            return self.per_token(n) / 3.0
        curve = _serve_curve(int(input_len), int(output_len), int(self.vocab_size), int(self.seq_len),
                             bool(self.tied_embeddings), bool(self.nonembed), self.arch)
        return n * np.exp(curve(np.log(n), 0)[0])

    # ------------------------------------------------------------------ shapes
    def shape(self, n: float) -> ModelConfig | None:
        """The shape the size rule builds for a target of n total parameters with this count's
        vocabulary and window (None under 6ND or k N^e, or where no shape fits)."""
        if self.is_power:
            return None
        try:
            return model_config(int(n), int(self.vocab_size), int(self.seq_len), bool(self.tied_embeddings), self.arch)
        except UserError:
            return None

    def n_of(self, shape: ModelConfig) -> int:
        """A shape's N as this count reads it (total, or non-embedding)."""
        return shape.n_params(embeddings=not self.nonembed)

    def power_over(self, lo: float, hi: float) -> tuple[float, float]:
        """(k, e) of the power law k N^e closest to this count over [lo, hi] (least squares in
        logs): for code that takes a power law, used only over the runs' own sizes."""
        if self.is_power:
            return float(self.k), float(self.e)
        x = np.linspace(math.log(lo), math.log(max(hi, lo * 1.0001)), 64)
        y = x + self.log_per_param(x, 0)[0]
        e, lk = np.polyfit(x, y, 1)
        return float(math.exp(lk)), float(e)

    # ------------------------------------------------------------------ words and records
    def describe(self) -> str:
        if self.kind == "6nd":
            return "6 N D"
        if self.kind == "power":
            return f"{self.k:.4g} N^{self.e:.4g} D"
        what = "encoder-decoder" if self.kind == "encdec" else (
            "decoder-only (whole-window CLM)" if self.clm_window else "decoder-only")
        return (f"{what} formula (scaling.base.shapes), seq_len {self.seq_len}, noise {self.noise_density:g}, "
                f"vocab {self.vocab_size}" + (", N non-embedding" if self.nonembed else "")
                + ("" if self.tied_embeddings else ", untied embeddings"))

    def to_dict(self) -> dict:
        """The count as fit.json records it (`from_dict` reads it back)."""
        if self.kind == "6nd":
            return {"kind": "6nd", "k": 6.0, "e": 1.0}
        if self.kind == "power":
            return {"kind": "power", "k": float(self.k), "e": float(self.e)}
        rec = {"kind": self.kind, "vocab_size": int(self.vocab_size), "seq_len": int(self.seq_len),
               "noise_density": float(self.noise_density), "tied_embeddings": bool(self.tied_embeddings),
               "nonembed": bool(self.nonembed)}
        if self.kind == "decoder":
            rec["clm_window"] = bool(self.clm_window)
        return rec

    @classmethod
    def from_dict(cls, d: dict | None) -> "FlopCount":
        """A count from its record. A record of before the kinds (only k and e, a power law
        fitted on the runs) reads as that power law; none at all as 6ND."""
        d = d or {}
        kind = d.get("kind")
        if kind in BY_SHAPE:
            return cls(kind, int(d["seq_len"]), float(d.get("noise_density", 0.15)), int(d["vocab_size"]),
                       bool(d.get("tied_embeddings", True)), bool(d.get("nonembed", False)),
                       clm_window=bool(d.get("clm_window", False)))
        k, e = float(d.get("k", 6.0)), float(d.get("e", 1.0))
        if kind == "6nd" or (kind is None and k == 6.0 and e == 1.0):
            return cls("6nd")
        return cls("power", k=k, e=e)


SIX_ND = FlopCount("6nd")


def parse_flop_count(spec: str, where: str = "--flops") -> FlopCount:
    """A count as a user writes it: '6nd'; 'k*N^e' or 'power:k=8,e=1'; 'encdec:vocab=260,
    seq_len=32[,noise=0.15][,nonembed][,untied]'; 'decoder:...' the same, [,window] for runs of
    whole-window causal LM alone."""
    s = str(spec).strip().lower().replace(" ", "")
    if s in ("6nd", "6n"):
        return FlopCount("6nd")
    kind, _, rest = s.partition(":")
    if "*n^" in kind and not rest:
        k, _, e = kind.partition("*n^")
        try:
            return FlopCount("power", k=float(k), e=float(e))
        except ValueError:
            raise UserError(f"{where}: {spec!r}: expected k*N^e with numbers k and e") from None
    opts: dict = {}
    for part in filter(None, rest.split(",")):
        key, eq, val = part.partition("=")
        opts[key] = val if eq else True
    try:
        if kind == "power":
            return FlopCount("power", k=float(opts.get("k", 6)), e=float(opts.get("e", 1)))
        if kind in BY_SHAPE:
            missing = [k for k in ("vocab", "seq_len") if k not in opts]
            if missing:
                raise UserError(f"{where}: {spec!r}: the {kind} count needs {' and '.join(missing)} "
                                f"({kind}:vocab=260,seq_len=32)")
            return FlopCount(kind, int(opts["seq_len"]), float(opts.get("noise", 0.15)), int(opts["vocab"]),
                             tied_embeddings="untied" not in opts, nonembed="nonembed" in opts,
                             clm_window=kind == "decoder" and "window" in opts)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {spec!r}: a value is not a number") from None
    raise UserError(f"{where}: {spec!r}: expected 6nd, k*N^e, power:k=..,e=.., encdec:vocab=..,seq_len=.. or "
                    "decoder:vocab=..,seq_len=..[,window]")
