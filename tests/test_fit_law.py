"""Approach 3: the Chinchilla reference numbers, the optimiser against scipy, recovery, coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.optimize import minimize

from scaling.fit.law import (LawData, bootstrap_law, chinchilla_grid, fit_law, huber_objective,
                             optimal_nd, predict_loss, to_params)
from scaling.fit.lbfgs import minimize_batch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla-epoch" / "svg_extracted_data.csv"
TRUE = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.30}


def chinchilla_points() -> LawData:
    if not DATA.exists():
        pytest.skip("Chinchilla data (../shared/data/chinchilla-epoch) not present")
    df = pl.read_csv(DATA).sort("loss").head(240)        # drop the 5 highest-loss points
    n = df["Model Size"].to_numpy()
    return LawData.from_arrays(n, df["Training FLOP"].to_numpy() / (6 * n), df["loss"].to_numpy())


def synthetic(rng, noise=0.005, sizes=(2e7, 5e7, 1e8, 2e8, 5e8, 1e9), tpp=(5, 10, 20, 40, 80, 160)):
    n = np.repeat(np.array(sizes), len(tpp))
    d = n * np.tile(np.array(tpp, float), len(sizes))
    loss = predict_loss(TRUE, n, d) * np.exp(noise * rng.standard_normal(n.size))
    return LawData.from_arrays(n, d, loss)


def plain_objective(x, data):
    """Written out again, independently of law.py, for the scipy reference loop."""
    a, b, e, alpha, beta = x
    pred = np.logaddexp(np.logaddexp(a - alpha * data.log_n, b - beta * data.log_d), e)
    r = pred - data.log_l
    return float(np.sum(np.where(np.abs(r) <= 1e-3, 0.5 * r ** 2, 1e-3 * (np.abs(r) - 0.5e-3))))


def test_chinchilla_reference_fit():
    fit = fit_law(chinchilla_points())
    p = fit.params
    for k, want, tol in (("E", 1.8172, 0.01), ("alpha", 0.3473, 0.01), ("beta", 0.3672, 0.01),
                         ("A", 477.8, 0.05), ("B", 2143, 0.05)):
        assert abs(p[k] / want - 1) < tol, (k, p[k])
    assert fit.objective <= 1.0183e-3 * (1 + 1e-4)
    assert fit.n_starts == 4500


def test_objective_equals_or_beats_scipy_loop_over_starts():
    data = chinchilla_points()
    fit = fit_law(data)
    grid = chinchilla_grid()
    rng = np.random.default_rng(1)
    f0 = np.array([plain_objective(x, data) for x in grid])
    subset = np.r_[np.argsort(f0)[:3], rng.choice(len(grid), 5, replace=False)]
    best = min(minimize(plain_objective, grid[i], args=(data,), method="L-BFGS-B").fun for i in subset)
    assert fit.objective <= best * (1 + 1e-9)
    assert abs(plain_objective(fit.x, data) - fit.objective) < 1e-12


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    data = synthetic(rng, noise=0.02)
    x = np.array([[6.0, 7.0, 0.5, 0.35, 0.3], [5.0, 8.0, 0.4, 0.3, 0.4]])
    w = rng.integers(0, 3, (2, len(data))).astype(float)
    f, g = huber_objective(x, data, w)
    h = 1e-6
    for j in range(5):
        dx = np.zeros_like(x)
        dx[:, j] = h
        num = (huber_objective(x + dx, data, w)[0] - huber_objective(x - dx, data, w)[0]) / (2 * h)
        np.testing.assert_allclose(g[:, j], num, rtol=1e-4, atol=1e-9)


def test_batched_lbfgs_on_rosenbrock():
    def fg(x, idx):
        a, b = x[:, 0], x[:, 1]
        f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        g = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], 1)
        return f, g
    res = minimize_batch(fg, np.array([[-1.2, 1.0], [2.0, -1.0], [0.0, 0.0]]))
    np.testing.assert_allclose(res.x, 1.0, atol=1e-5)
    assert res.converged.all()


def test_recovers_known_parameters_without_noise():
    data = synthetic(np.random.default_rng(0), noise=0.0)
    p = fit_law(data).params
    for k, v in TRUE.items():
        assert abs(p[k] / v - 1) < 1e-3, (k, p[k])


def test_recovers_known_parameters_with_noise_and_screen_matches_full_grid():
    data = synthetic(np.random.default_rng(3), noise=0.003)
    fast = fit_law(data)
    full = fit_law(data, refine=None)
    assert fast.objective <= full.objective * (1 + 1e-9)
    p = fast.params
    assert abs(p["E"] / TRUE["E"] - 1) < 0.03
    assert abs(p["alpha"] - TRUE["alpha"]) < 0.05 and abs(p["beta"] - TRUE["beta"]) < 0.05
    n, d = optimal_nd(p, 1e21)
    n0, d0 = optimal_nd(TRUE, 1e21)
    assert abs(np.log(n / n0)) < np.log(1.5)


def test_bootstrap_intervals_cover_truth_at_roughly_nominal_rate():
    # Cheap version of bench/bench_fit.py's coverage study: 16 datasets x 40 resamples.
    rng = np.random.default_rng(7)
    hits = {"alpha": 0, "beta": 0, "E": 0}
    reps = 16
    for _ in range(reps):
        data = synthetic(rng, noise=0.01)
        fit = fit_law(data, refine=64)
        xs = bootstrap_law(data, fit, 40, rng)
        ps = [to_params(x) for x in xs]
        for k in hits:
            lo, hi = np.percentile([q[k] for q in ps], [2.5, 97.5])
            hits[k] += lo <= TRUE[k] <= hi
    for k, h in hits.items():
        assert h / reps >= 0.7, (k, h)   # nominal 0.95; loose for 16 repetitions


def test_degenerate_names_a_vanished_term_and_passes_a_real_law():
    from scaling.fit.law import degenerate

    n = np.geomspace(1e6, 1e9, 10)
    d = 20 * n
    good = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.30}
    assert degenerate(good, n, d) is None
    assert "E vanished" in degenerate({**good, "E": 1e-20}, n, d)
    assert "A/N^alpha vanished" in degenerate({**good, "A": 1e-9}, n, d)
    assert "exponent out of (0, 3)" in degenerate({**good, "alpha": 4.2}, n, d)


# ----------------------------------------------------------------------------- variable projection

def test_projection_solves_the_nonnegative_least_squares_exactly():
    from scipy.optimize import nnls

    from scaling.fit.law import project
    rng = np.random.default_rng(11)
    data = synthetic(rng, noise=0.01)
    L = np.exp(data.log_l)
    alphas, betas = np.array([0.1, 0.34, 1.2]), np.array([0.05, 0.3, 2.0])
    coef, sse = project(data, alphas, betas)
    for i, al in enumerate(alphas):
        for j, be in enumerate(betas):
            X = np.stack([np.ones_like(L), np.exp(-al * data.log_n), np.exp(-be * data.log_d)], 1) / L[:, None]
            want, res = nnls(X, np.ones_like(L))       # weighted by 1/L: relative residuals
            np.testing.assert_allclose(coef[i, j], want, rtol=1e-6, atol=1e-9 * max(1.0, want.max()))
            assert sse[i, j] == pytest.approx(res ** 2, rel=1e-6, abs=1e-12)


def test_variable_projection_reaches_the_full_grid_optimum_on_chinchilla():
    from scaling.fit.law import fit_law_vp
    data = chinchilla_points()
    vp = fit_law_vp(data)
    full = fit_law(data, refine=None)
    assert abs(vp.objective - full.objective) <= 1e-6 * full.objective
    for k in ("E", "A", "B", "alpha", "beta"):
        assert vp.params[k] == pytest.approx(full.params[k], rel=1e-4), k


@pytest.mark.parametrize("seed, truth", [
    (0, TRUE),
    (1, {"E": 2.1, "A": 90.0, "B": 5000.0, "alpha": 0.25, "beta": 0.45}),    # alpha != beta
    (2, {"E": 0.5, "A": 2000.0, "B": 300.0, "alpha": 0.6, "beta": 0.28}),
])
def test_variable_projection_matches_the_full_grid_on_synthetic_laws(seed, truth):
    from scaling.fit.law import fit_law_vp
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(2e7, 1e9, 6), 6)
    d = n * np.tile(np.geomspace(5, 160, 6), 6)
    data = LawData.from_arrays(n, d, predict_loss(truth, n, d) * np.exp(0.004 * rng.standard_normal(n.size)))
    vp = fit_law_vp(data)
    full = fit_law(data, refine=None)
    assert vp.objective <= full.objective * (1 + 1e-6)
    for k in ("alpha", "beta"):       # the same optimum, near the truth as far as the noise allows
        assert vp.params[k] == pytest.approx(full.params[k], rel=1e-3)
        assert abs(vp.params[k] - truth[k]) < 0.15


def test_variable_projection_holds_fixed_parameters():
    from scaling.fit.law import fit_law_vp
    data = synthetic(np.random.default_rng(5), noise=0.003)
    for fixed in ({"E": 1.7}, {"alpha": 0.34}, {"E": 1.5, "beta": 0.3}, {"A": 400.0}):
        vp, grid = fit_law_vp(data, fixed=fixed), fit_law(data, fixed=fixed)
        for k, v in fixed.items():
            assert vp.params[k] == pytest.approx(v, rel=1e-12)
        assert vp.objective <= grid.objective * (1 + 1e-6), fixed
