"""From studies to rules: the best value per size, power-law fits of them, and the lookup a
sweep file's `lr = { tuned = DIR }` uses.

    value*(N) = coef * N^exp        least squares in log-log, N = non-embedding parameters
                                    (the variable of the rule of N); batch size also against C

Intervals come from a bootstrap over trials: each size's completed trials are resampled with
replacement and the best of the resample taken, so a size whose optimum rests on one lucky
trial widens the interval. tuned.json holds everything a sweep needs, so planning reads a
JSON file and never imports Optuna or torch.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from scaling.base.config import format_count
from scaling.base.errors import UserError
from scaling.base.intervals import CI
from scaling.base.rundir import atomic_write_json
from scaling.tuning.study import BEST, TRIALS_DIR, Space, load, study_names

TUNED = "tuned.json"
FITTED = ("lr", "batch_size")


def fit_power(n, y) -> tuple[float, float]:
    """(coef, exp) of y = coef * n^exp; needs two distinct n."""
    exp, logc = np.polyfit(np.log(np.asarray(n, float)), np.log(np.asarray(y, float)), 1)
    return float(math.exp(logc)), float(exp)


def bootstrap_fit(n: list[float], trials: list[list[tuple[float, float]]], n_boot: int = 1000,
                  seed: int = 0) -> dict:
    """Fit of the per-size argmin; trials[i] = [(value, loss), ...] of size i's completed trials."""
    best = [min(t, key=lambda vl: vl[1])[0] for t in trials]
    coef, exp = fit_power(n, best)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        pick = []
        for t in trials:
            idx = rng.integers(0, len(t), len(t))
            pick.append(min((t[i] for i in idx), key=lambda vl: vl[1])[0])
        samples.append(fit_power(n, pick))
    s = np.asarray(samples)
    # The interval of the rule itself along N (what a sweep would read), for the figure.
    grid = np.geomspace(min(n), max(n), 25)
    pred = s[:, :1] * grid[None, :] ** s[:, 1:2]
    lo, hi = np.percentile(pred, CI, axis=0)
    return {"coef": coef, "exp": exp, "coef_ci": [float(v) for v in np.percentile(s[:, 0], CI)],
            "exp_ci": [float(v) for v in np.percentile(s[:, 1], CI)], "n_boot": n_boot,
            "band": {"n": grid.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}}


def collect(out: Path) -> list[dict]:
    """Per size (small to large): its identity, best trial, and every completed trial."""
    from optuna.trial import TrialState

    sizes = []
    for name in study_names(out):
        study = load(out, name)
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        best = min(done, key=lambda t: t.value) if done else None
        rule = study.user_attrs.get("rule") or {}
        rule_t = next((t for t in done if t.user_attrs.get("rule")), None)
        sizes.append({
            **study.user_attrs.get("size", {}), "study": name,
            "tuned": Space(**{k: tuple(v) if v else None for k, v in study.user_attrs["config"]["space"].items()}).tuned(),
            "space": study.user_attrs["config"]["space"],
            "trials": [{"trial": t.number, "loss": t.value, **Space.values(t.params)} for t in done],
            "n_trials": len(study.get_trials(deepcopy=False)), "n_completed": len(done),
            "best": None if best is None else {"trial": best.number, "loss": best.value, **Space.values(best.params)},
            "lr_rule": rule.get("lr"), "lr_rule_loss": rule_t.value if rule_t else None,
        })
    return sizes


def fits(sizes: list[dict], n_boot: int = 1000) -> dict:
    ok = [s for s in sizes if s["best"] is not None]
    out = {}
    for key in FITTED:
        have = [s for s in ok if key in s["tuned"]]
        for x in ("n_params_nonembed", "flops") if key == "batch_size" else ("n_params_nonembed",):
            if len({s[x] for s in have}) < 2:
                continue
            f = bootstrap_fit([s[x] for s in have], [[(t[key], t["loss"]) for t in s["trials"]] for s in have], n_boot)
            out[key if x == "n_params_nonembed" else f"{key}_vs_C"] = {
                **f, "x": x, "range": [min(s[x] for s in have), max(s[x] for s in have)]}
    return out


def write(out: Path, n_boot: int = 1000) -> dict:
    """OUT/<size>/best.json per size with a completed trial, and OUT/tuned.json."""
    out = Path(out)
    sizes = collect(out)
    for s in sizes:
        if s["best"] is None:
            continue
        b = s["best"]
        lo, hi = s["space"]["lr"]
        atomic_write_json(out / s["key"] / BEST, {
            "params": s["key"], "n_params": s["n_params"], "n_params_nonembed": s["n_params_nonembed"],
            "tokens": s["tokens"], **{k: b[k] for k in b if k not in ("trial", "loss")}, "loss": b["loss"],
            "trial": b["trial"], "run": str(Path(s["key"]) / TRIALS_DIR / str(b["trial"])),
            "n_trials": s["n_trials"], "n_completed": s["n_completed"], "lr_rule": s["lr_rule"],
            "lr_rule_loss": s["lr_rule_loss"], "lr_range": [lo, hi], "at_range_edge": at_edge(b["lr"], lo, hi),
        })
    doc = {"sizes": sizes, "fits": fits(sizes, n_boot), "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(out / TUNED, doc)
    return doc


def at_edge(lr: float, lo: float, hi: float) -> bool:
    """Best lr within ~10% (in log space) of a bound: the optimum may lie outside the range."""
    span = math.log(hi / lo)
    return math.log(lr / lo) < 0.1 * span or math.log(hi / lr) < 0.1 * span


# ----------------------------------------------------------- sweep-file lookup
def resolve(dir: str, key: str, n_nonembed: int, where: str) -> tuple[float, str]:
    """The tuned value of `key` (lr, batch_size) for a run of n_nonembed parameters, and
    where it came from. Exact sizes take their study's best; sizes between the tuned ones
    take the fitted rule; sizes outside are refused (extrapolating is a deliberate act:
    write the power rule out)."""
    doc = _read(dir, where)
    sizes = [s for s in doc.get("sizes", []) if key in s.get("tuned", [])]
    if not sizes:
        raise UserError(f"{where}: the studies in {dir} did not tune {key}")
    same = [s for s in sizes if s["n_params_nonembed"] == n_nonembed]
    if same:
        s = same[0]
        if s["best"] is None:
            raise UserError(f"{where}: size {s['key']} in {dir} has no completed trial yet")
        return s["best"][key], f"tuned {s['key']} (trial {s['best']['trial']})"
    done = [s for s in sizes if s["best"] is not None]
    fit = doc.get("fits", {}).get(key)
    lo = min((s["n_params_nonembed"] for s in done), default=None)
    hi = max((s["n_params_nonembed"] for s in done), default=None)
    if fit is None or not lo <= n_nonembed <= hi:
        span = f"tuned sizes {format_count(lo)}-{format_count(hi)} (non-embedding)" if done else "no completed size"
        hint = (f"; to extrapolate, write {key} = {{ rule = \"power\", coef = {fit['coef']:.4g}, exp = {fit['exp']:.4g} }} "
                f"(the fit)" if fit else "; tune it, or set it")
        raise UserError(f"{where}: a model of {format_count(n_nonembed)} non-embedding parameters is outside "
                        f"{dir}'s {span}{hint}")
    return fit["coef"] * n_nonembed ** fit["exp"], f"tuned rule {fit['coef']:.3g}·N^{fit['exp']:.3f}"


_cache: dict[tuple, dict] = {}


def _read(dir: str, where: str) -> dict:
    p = Path(dir) / TUNED
    try:
        st = p.stat()
    except OSError:
        raise UserError(f"{where}: no tuned values in {dir} ({TUNED} not found; run `scaling tune` "
                        f"with --out {dir} first)") from None
    k = (str(p), st.st_mtime_ns)
    if k not in _cache:
        try:
            _cache[k] = json.loads(p.read_text())
        except ValueError as e:
            raise UserError(f"{p}: not valid JSON ({e})") from None
    return _cache[k]
