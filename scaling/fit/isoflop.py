"""Approaches 1 and 2 of Chinchilla: compute-optimal N and D read off the runs directly.

Approach 1 (envelope): at each FLOP value of a log grid, the lowest loss any run reached
there (its curve interpolated in log-log) names the best size N and its tokens D so far; power
laws N_opt = k_N C^a and D_opt = k_D C^b are fitted to those points by least squares in logs.

Approach 2 (IsoFLOP profiles): per FLOP budget, the minimum of loss over log N is N_opt(C).
Three ways to find it (`profile_method`):

- "local" (default): a parabola through the lowest-loss run and up to 2 sizes on either side,
  as many on each (3 sizes when it is next to an edge of the sweep). The profile of
  L = E + A/N^alpha + B/D^beta is not a parabola in log N when alpha != beta; one parabola over
  the whole budget is pulled off the minimum by the far points, and the more so the further
  the grid is off-centre (see the README's figures); near the minimum any smooth profile is a
  parabola.
- "parabola": one parabola through every run of the budget (Chinchilla's Approach 2).
- "akima": an Akima spline through the profile (Porian et al.): no shape assumed, but it
  follows every point, noise included.
 D_opt is then the budget spent at that size,
D_opt = C / (FLOPs per token at N_opt), the FLOPs per token read off the budget's own runs
(flops / tokens, interpolated in log N): the same count the runs' compute used (the
encoder-decoder formula for the lab's runs, 6N for a table that only has 6ND), so
N_opt and D_opt stay on the budget. (A second parabola in log D, as Chinchilla drew, gives a
D_opt that need not.) A budget whose vertex is outside its sampled sizes, or whose parabola
opens downwards, says nothing about the optimum and is refused (with a warning), never
extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GRID_POINTS = 1500            # Chinchilla's envelope used 1,500 log-spaced FLOP values
BUDGET_STEP_DEX = 0.1         # without a budget column, FLOPs are rounded to 10^(k * 0.1)


@dataclass
class PowerLaw:
    """y = k * C^exponent, fitted in logs."""

    exponent: float
    coef: float

    def __call__(self, c):
        return self.coef * np.asarray(c, float) ** self.exponent


def fit_power(c: np.ndarray, y: np.ndarray) -> PowerLaw:
    """y = coef c^exponent, least squares in logs."""
    slope, icpt = np.polyfit(np.log(c), np.log(y), 1)
    return PowerLaw(float(slope), float(np.exp(icpt)))


# ----------------------------------------------------------------------------- Approach 1

@dataclass
class Envelope:
    """Approach 1's envelope: at each compute, the lowest loss any run reached, and that run's N and D."""

    c: np.ndarray         # FLOP values on the envelope
    n: np.ndarray         # size of the best run at each
    d: np.ndarray         # its tokens at that point
    loss: np.ndarray
    from_curves: bool


def curve_matrix(runs, curves: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]], grid: np.ndarray):
    """[runs, grid] log loss and log tokens interpolated in log FLOPs; NaN outside a curve."""
    ll = np.full((len(curves), len(grid)), np.nan)
    lt = np.full_like(ll, np.nan)
    lg = np.log(grid)
    for i, (_, f, t, l) in enumerate(curves):
        lf = np.log(f)
        inside = (lg >= lf[0]) & (lg <= lf[-1])
        ll[i, inside] = np.interp(lg[inside], lf, np.log(l))
        lt[i, inside] = np.interp(lg[inside], lf, np.log(t))
    return ll, lt


def envelope_from_matrix(params: np.ndarray, grid, ll, lt, rows=None) -> Envelope:
    """The envelope of the curves of `curve_matrix` (of the runs `rows` only, for a bootstrap
    resample): at each compute of the grid some run covers, the run of lowest loss."""
    if rows is not None:
        ll, lt, params = ll[rows], lt[rows], params[rows]
    covered = ~np.all(np.isnan(ll), axis=0)
    llc = np.where(np.isnan(ll[:, covered]), np.inf, ll[:, covered])
    best = np.argmin(llc, axis=0)
    cols = np.arange(llc.shape[1])
    return Envelope(c=grid[covered], n=params[best], d=np.exp(lt[:, covered][best, cols]),
                    loss=np.exp(llc[best, cols]), from_curves=True)


def final_point_frontier(n, d, c, loss) -> Envelope:
    """Without curves: the runs no cheaper run beats (each run a one-point curve)."""
    order = np.argsort(c)
    keep, best = [], np.inf
    for i in order:
        if loss[i] < best:
            keep.append(i)
            best = loss[i]
    k = np.array(keep)
    return Envelope(c=c[k], n=n[k], d=d[k], loss=loss[k], from_curves=False)


@dataclass
class EnvelopeFit:
    """Approach 1: N_opt and D_opt as power laws of compute, fitted to the envelope's points."""

    n_law: PowerLaw
    d_law: PowerLaw
    env: Envelope
    n_sizes: int          # distinct sizes on the envelope


def fit_envelope(env: Envelope, all_sizes: np.ndarray) -> EnvelopeFit:
    """Power laws through the envelope, leaving out the stretches won by the smallest or the
    largest size sampled: there the optimum may lie beyond the sizes tried (censored), and
    keeping them flattens the exponent."""
    inner = (env.n > np.min(all_sizes)) & (env.n < np.max(all_sizes))
    env = Envelope(env.c[inner], env.n[inner], env.d[inner], env.loss[inner], env.from_curves)
    sizes = np.unique(env.n)
    if len(sizes) < 3:
        raise ValueError(f"the envelope holds {len(sizes)} distinct size(s) between the smallest and largest; "
                         "approach 1 needs at least 3")
    return EnvelopeFit(fit_power(env.c, env.n), fit_power(env.c, env.d), env, len(sizes))


# ----------------------------------------------------------------------------- Approach 2

def group_budgets(flops: np.ndarray, budget: np.ndarray | None,
                  step_dex: float = BUDGET_STEP_DEX) -> tuple[np.ndarray, np.ndarray]:
    """Budget label per run and the budgets' FLOP values. Use the budget column if present;
    else round log10 FLOPs to a multiple of step_dex (a run's FLOPs land near, not on, its
    sweep's budget) and use the geometric mean of each group's FLOPs as its budget. A budget
    column with a missing value (a grid sweep's is all null) is no budget column."""
    if has_budgets(budget):
        values, labels = np.unique(budget, return_inverse=True)
        return labels, values.astype(float)
    key = np.round(np.log10(flops) / step_dex).astype(np.int64)
    uniq, labels = np.unique(key, return_inverse=True)
    values = np.array([10 ** np.log10(flops[labels == g]).mean() for g in range(len(uniq))])
    return labels, values


def has_budgets(budget: np.ndarray | None) -> bool:
    """Whether a budget column can group the runs: present, with a finite value in every row."""
    return budget is not None and len(budget) > 0 and bool(np.all(np.isfinite(budget)))


def slice_tolerance(step_dex: float = BUDGET_STEP_DEX) -> str:
    """How far apart two runs' FLOPs may be and share a slice: 0.1 dex -> '12%'."""
    return f"{100 * (10 ** (step_dex / 2) - 1):.0f}%"


@dataclass
class Profile:
    """Approach 2 at one budget: the minimum of its loss against N (N_opt, D_opt, its loss),
    or why it has none (`refused`)."""

    budget: float
    n_runs: int
    n_opt: float | None
    d_opt: float | None
    loss_opt: float | None
    coef_n: tuple | None        # parabola in log N: loss = c2 x^2 + c1 x + c0 (None for akima)
    refused: str | None = None  # why this budget gave no optimum
    window: tuple | None = None  # the sizes (min N, max N) the parabola was fitted on


def _vertex(x: np.ndarray, y: np.ndarray):
    c2, c1, c0 = np.polyfit(x, y, 2)
    if not c2 > 0:
        return None, (c2, c1, c0), "its loss profile has no minimum (the parabola opens downwards)"
    xv = -c1 / (2 * c2)
    if not (x.min() <= xv <= x.max()):
        return None, (c2, c1, c0), "its minimum lies outside the sampled range"
    return xv, (c2, c1, c0), None


def tokens_at(budget: float, n: np.ndarray, d: np.ndarray, c: np.ndarray, n_at: float) -> float:
    """Tokens the budget buys at size n_at: budget / FLOPs per token, the runs' own FLOPs per
    token (c / d) interpolated in log N (their sizes bracket n_at)."""
    order = np.argsort(n)
    log_fpt = np.interp(np.log(n_at), np.log(n[order]), np.log(c[order] / d[order]))
    return float(budget / np.exp(log_fpt))


PROFILE_METHODS = ("local", "parabola", "akima")
LOCAL_SIZES = 5


def _by_size(n: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct log sizes, ascending, with the mean loss of the runs at each (seeds)."""
    x, inv = np.unique(np.round(np.log(n), 9), return_inverse=True)
    return x, np.bincount(inv, weights=loss) / np.bincount(inv)


def _minimum(n: np.ndarray, loss: np.ndarray, method: str):
    """(log N_opt, parabola coefficients or None, why refused or None, (lo, hi) log N fitted)."""
    x, y = _by_size(n, loss)
    if method == "parabola":
        return (*_vertex(x, y), (x[0], x[-1]))
    j = int(np.argmin(y))
    if j == 0 or j == len(x) - 1:
        return None, None, "its lowest-loss run is at the edge of the sampled sizes", None
    if method == "local":
        # As many sizes on each side of the lowest run (up to 2): a window slid inwards at an
        # edge of the sweep (1 size below the lowest run, 3 above) leans on the far side, and
        # where the profile is asymmetric (alpha != beta, or the steep undertrained side of a
        # real sweep) its vertex moves with the lowest run's place in the sweep, which drifts
        # from budget to budget on a fixed ladder of sizes: a bias in a (tests/test_fit_cli.py).
        k = min(LOCAL_SIZES // 2, j, len(x) - 1 - j)
        xw = x[j - k:j + k + 1]
        return (*_vertex(xw, y[j - k:j + k + 1]), (xw[0], xw[-1]))
    if method == "akima":
        from scipy.interpolate import Akima1DInterpolator   # here, not above: scipy loads for --profile akima alone

        xs = np.linspace(x[0], x[-1], 4001)
        ys = Akima1DInterpolator(x, y)(xs)
        i = int(np.argmin(ys))
        if i == 0 or i == len(xs) - 1:
            return None, None, "its interpolated minimum lies on the edge of the sampled sizes", None
        return float(xs[i]), None, None, None
    raise ValueError(f"unknown profile method {method!r}; expected one of {', '.join(PROFILE_METHODS)}")


def profile(budget: float, n: np.ndarray, d: np.ndarray, loss: np.ndarray, c: np.ndarray,
            method: str = "local") -> Profile:
    """The IsoFLOP profile of one budget's runs and its minimum, by `method` (local, parabola, akima)."""
    sizes = len(_by_size(n, loss)[0])
    if sizes < 3:
        return Profile(budget, len(n), None, None, None, None,
                       f"it has {sizes} distinct size(s); a profile minimum needs at least 3")
    xn, cn, why, win = _minimum(n, loss, method)
    window = None if win is None else (float(np.exp(win[0])), float(np.exp(win[1])))
    if why:
        return Profile(budget, len(n), None, None, None, cn, why, window)
    n_opt = float(np.exp(xn))
    if cn is not None:
        loss_opt = float(np.polyval(cn, xn))
    else:
        x, y = _by_size(n, loss)
        from scipy.interpolate import Akima1DInterpolator   # here, not above: scipy loads for --profile akima alone
        loss_opt = float(Akima1DInterpolator(x, y)(xn))
    return Profile(budget, len(n), n_opt, tokens_at(budget, n, d, c, n_opt), loss_opt, cn, None, window)


@dataclass
class IsoFlopFit:
    """Approach 2: N_opt and D_opt as power laws of compute, fitted to the profiles' minima."""

    n_law: PowerLaw
    d_law: PowerLaw
    profiles: list
    used: list = field(default_factory=list)   # budgets with an optimum


def fit_isoflop(labels, values, n, d, loss, c, method: str = "local") -> IsoFlopFit:
    """Approach 2 on runs grouped by budget (`group_budgets`' labels and values): each budget's
    profile, then power laws through the minima of those that have one (at least 2)."""
    profs = [profile(values[g], n[labels == g], d[labels == g], loss[labels == g], c[labels == g], method)
             for g in range(len(values))]
    ok = [p for p in profs if p.n_opt is not None]
    if len(ok) < 2:
        raise ValueError(f"{len(ok)} FLOP budget(s) with an interior optimum; approach 2 needs at least 2")
    budgets = np.array([p.budget for p in ok])
    return IsoFlopFit(fit_power(budgets, np.array([p.n_opt for p in ok])),
                      fit_power(budgets, np.array([p.d_opt for p in ok])), profs, ok)
