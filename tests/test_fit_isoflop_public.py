"""Approach 2 against a published IsoFLOP analysis (Porian et al. 2024) and the bias its
sweeps exposed in the local parabola, shown on a synthetic law."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from scaling.fit import FitOptions, fit_all, isoflop, load_runs
from scaling.fit.law import frontier, optimal_nd, predict_loss
from scaling.fit.table import RunTable

PORIAN = Path(__file__).parent / "data" / "porian_isoflop.csv"
# Their published a (bootstrap medians of Akima minima with seed noise, weighted fit) and its
# 95% interval, from the same files (the CSV's header).
PUBLISHED = {"rw-cosine": (0.5715, 0.560, 0.589), "rw-tuned": (0.4969, 0.491, 0.505),
             "owt2-cosine": (0.5743, 0.542, 0.606), "owt2-tuned": (0.5185, 0.493, 0.541)}


def _exponents(tmp_path, profile: str) -> dict:
    df = pl.read_csv(PORIAN, comment_prefix="#")
    out = {}
    for name in PUBLISHED:
        p = tmp_path / f"{name}.parquet"
        df.filter(pl.col("set") == name).drop("set").with_columns(flops=pl.col("budget")).write_parquet(p)
        fit = fit_all(load_runs(p), opts=FitOptions(approaches=(2,), n_boot=0, progress=False, profile=profile,
                                                    holdout_budget=False))
        out[name] = fit["approach2"]["a"]
    return out


def test_akima_profiles_reproduce_porian_published_exponents(tmp_path):
    # Their method without its bootstrap: every set within 0.01 of the published a.
    a = _exponents(tmp_path, "akima")
    for name, (pub, _, _) in PUBLISHED.items():
        assert abs(a[name] - pub) < 0.01, (name, a[name], pub)


def test_local_profile_on_porian_sweeps(tmp_path):
    # The default: within 0.01 of the published a on three sets (a window slid inwards at the
    # sweep's edge was 0.022 and 0.025 low on the two cosine sets) and inside the authors'
    # own 95% interval on all four (OpenWebText2 tuned: 0.505 against 0.5185).
    a = _exponents(tmp_path, "local")
    for name in ("rw-cosine", "rw-tuned", "owt2-cosine"):
        assert abs(a[name] - PUBLISHED[name][0]) < 0.01, (name, a[name])
    for name, (_, lo, hi) in PUBLISHED.items():
        assert lo < a[name] < hi, (name, a[name])


def test_local_window_is_symmetric_about_the_lowest_run_where_a_slid_window_is_biased():
    # An asymmetric profile (alpha 0.25, beta 1.0: the undertrained side is steep, as in real
    # sweeps), 8 sizes 0.15 dex apart per budget, the lowest run second from the bottom: a
    # window of 5 consecutive sizes slid inwards there (the former rule) holds 1 size below
    # the lowest run and 3 above, and its vertex swings with where the optimum falls between
    # sizes; a symmetric window's error stays put. On a fixed ladder that place drifts from
    # budget to budget, so the swing is a bias in a. No noise: only the method's bias is left.
    law = {"E": 1.8, "A": 400.0, "B": 40000.0, "alpha": 0.25, "beta": 1.0}
    truth = frontier(law)["a"]
    budgets = 1.25e16 * 2.0 ** np.arange(12)
    rows, slid, sym = [], [], []
    for k, c in enumerate(budgets):
        n_opt = optimal_nd(law, c)[0]
        offset = 0.7 + 0.6 * k / 11                 # the optimum, in steps above the smallest size
        n = n_opt * 10 ** (0.15 * (np.arange(8) - offset))
        loss = predict_loss(law, n, c / (6 * n))
        x, j = np.log(n), int(np.argmin(loss))
        assert j == 1
        slid.append(np.exp(isoflop._vertex(x[:5], loss[:5])[0]) / n_opt - 1)
        sym.append(isoflop.profile(c, n, c / (6 * n), loss, np.full(8, c)).n_opt / n_opt - 1)
        rows += [{"params": nn, "tokens": c / (6 * nn), "loss": ll, "budget": c, "flops": c} for nn, ll in zip(n, loss)]
    assert np.ptp(slid) > 0.04 and np.ptp(sym) < 0.005, (np.ptp(slid), np.ptp(sym))
    a_slid = np.polyfit(np.log(budgets), np.log(1 + np.array(slid)), 1)[0] + truth
    assert a_slid - truth < -0.006
    table = RunTable(df=pl.DataFrame(rows), source="synthetic", params_column="params")
    a2 = fit_all(table, opts=FitOptions(approaches=(2,), n_boot=0, progress=False, holdout_budget=False))["approach2"]
    assert a2["n_budgets"] == 12
    assert abs(a2["a"] - truth) < 0.001, (a2["a"], truth)
