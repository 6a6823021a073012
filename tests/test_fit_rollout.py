"""Rollout (leave-future-out) and fixed parameters: `scaling fit --rollout --fix`."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from scaling.cli import main
from scaling.fit import LawData, fit_law
from scaling.fit.rollout import cut_points, factor_bucket, rollout
from test_fit_cli import TRUE, isoflop_table


def _arrays(df: pl.DataFrame):
    return tuple(df[k].to_numpy().astype(float) for k in ("params", "tokens", "flops", "loss", "budget"))


def test_rollout_of_a_true_law_predicts_every_later_budget():
    df = isoflop_table(np.random.default_rng(0), budgets=(1e17, 3e17, 1e18, 3e18, 1e19, 3e19))
    n, d, c, loss, budget = _arrays(df)
    r = rollout(n, d, c, loss, budget)
    # One budget cannot separate N from D (nor give a power law of N_opt): fits on 2 through 5.
    ks = sorted({s["fit_budgets"] for s in r["steps"]})
    assert ks == [2, 3, 4, 5]
    assert len(r["steps"]) == 4 + 3 + 2 + 1
    assert max(s["extrapolation"] for s in r["steps"]) == pytest.approx(100, rel=1e-6)
    for s in r["steps"]:
        assert s["approach3"]["mean_abs_rel_error"] < 0.01, s
    a2 = [s["approach2"]["rel_error"] for s in r["steps"] if "approach2" in s]
    assert a2 and all(abs(e) < 0.2 for e in a2)
    assert r["skipped"] == {"approach2": [1], "approach3": [1]}
    assert [b["factor"] for b in r["by_factor"]] == [3, 10, 30, 100]


def test_rollout_exposes_a_law_that_breaks_past_the_data():
    """Past 1e18 FLOPs the runs do worse than the law of the small budgets (a regime change):
    the rollout's error must grow with the extrapolation factor, and be small in-regime."""
    df = isoflop_table(np.random.default_rng(1), budgets=(1e17, 3e17, 1e18, 3e18, 1e19, 3e19))
    df = df.with_columns(pl.when(pl.col("budget") > 1e18)
                         .then(pl.col("loss") * (1 + 0.03 * np.log10(pl.col("budget") / 1e18)))
                         .otherwise(pl.col("loss")).alias("loss"))
    r = rollout(*_arrays(df)[:4], df["budget"].to_numpy())
    first = [s for s in r["steps"] if s["fit_budgets"] == 2]
    inside = [s for s in first if s["budget"] <= 1e18]
    beyond = [s for s in first if s["budget"] >= 1e19]
    assert max(s["approach3"]["mean_abs_rel_error"] for s in inside) < 0.01
    assert min(s["approach3"]["mean_abs_rel_error"] for s in beyond) > 0.02


def test_fixed_parameter_is_held_and_the_rest_recovered():
    rng = np.random.default_rng(2)
    df = isoflop_table(rng)
    data = LawData.from_arrays(df["params"].to_numpy(), df["tokens"].to_numpy(), df["loss"].to_numpy())
    held = fit_law(data, fixed={"E": TRUE["E"]})
    assert held.params["E"] == pytest.approx(TRUE["E"], rel=1e-12)
    assert held.fixed == {"E": TRUE["E"]}
    assert abs(held.params["alpha"] - TRUE["alpha"]) < 0.02 and abs(held.params["beta"] - TRUE["beta"]) < 0.02
    # A wrong asymptote is held too, and the other parameters bend to it.
    wrong = fit_law(data, fixed={"E": 1.0})
    assert wrong.params["E"] == pytest.approx(1.0, rel=1e-12) and wrong.objective > held.objective
    two = fit_law(data, fixed={"alpha": 0.5, "beta": 0.4})
    assert (two.params["alpha"], two.params["beta"]) == pytest.approx((0.5, 0.4), rel=1e-12)


def test_cut_points_thin_a_long_ladder_to_half_decades():
    assert cut_points(np.geomspace(1e17, 1e19, 5)) == [1, 2, 3, 4]
    v = 10 ** np.arange(17, 21.01, 0.1)                # 41 budgets, 0.1 dex apart
    cuts = cut_points(v)
    assert cuts[0] == 1 and len(cuts) == 8
    assert np.allclose(np.diff(np.log10(v[np.array(cuts) - 1])), 0.5)
    assert [factor_bucket(f) for f in (1.0, 1.7, 2.0, 5.0, 8.0, 20, 100)] == [1, 1, 3, 3, 10, 30, 100]


def test_cli_rollout_with_fixed_e(tmp_path, capsys):
    df = isoflop_table(np.random.default_rng(3), budgets=(1e17, 1e18, 1e19, 1e20))
    p = tmp_path / "results.parquet"
    df.write_parquet(p)
    assert main(["fit", str(p), "--bootstrap", "20", "--rollout", "--fix", "E=1.7", "--no-progress", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["approach3"]["E"] == pytest.approx(1.7) and fit["approach3"]["fixed"] == {"E": 1.7}
    lo, hi = fit["approach3"]["ci"]["E"]
    assert lo == pytest.approx(1.7) and hi == pytest.approx(1.7)     # held in every resample too
    steps = fit["rollout"]["steps"]
    assert steps and all("approach3" in s and "approach3_fixed" in s for s in steps if s["fit_budgets"] >= 2)
    assert main(["fit", str(p), "--bootstrap", "0", "--rollout", "--fix", "E=1.7", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Rollout over 4 budgets" in text and "A3 with E = 1.7" in text and "held fixed: E = 1.7" in text
    assert "~100x" in text


@pytest.mark.parametrize("spec, msg", [("E=-1", "finite positive"), ("Q=1", "NAME=VALUE"), ("E", "NAME=VALUE"),
                                       ("E=abc", "not a number"), ("E=1,E=2", "twice"), (",", "expected")])
def test_cli_fix_rejects_bad_values(tmp_path, capsys, spec, msg):
    df = isoflop_table(np.random.default_rng(4))
    p = tmp_path / "results.parquet"
    df.write_parquet(p)
    assert main(["fit", str(p), "--fix", spec, "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert "--fix" in err and msg in err


def test_cli_fix_needs_approach_3(tmp_path, capsys):
    df = isoflop_table(np.random.default_rng(5))
    p = tmp_path / "results.parquet"
    df.write_parquet(p)
    assert main(["fit", str(p), "--fix", "E=1.7", "--approach", "2", "--bootstrap", "0"]) == 2
    assert "approach 3" in capsys.readouterr().err


def test_cli_method_choice_and_full_grid_needs_grid(tmp_path, capsys):
    df = isoflop_table(np.random.default_rng(6))
    p = tmp_path / "results.parquet"
    df.write_parquet(p)
    assert main(["fit", str(p), "--full-grid", "--bootstrap", "0"]) == 2
    assert "--method grid" in capsys.readouterr().err
    fits = {}
    for method in ("vp", "grid"):
        assert main(["fit", str(p), "--method", method, "--approach", "3", "--bootstrap", "0", "--json",
                     "--no-holdout"]) == 0
        fits[method] = json.loads(capsys.readouterr().out)["approach3"]
        assert fits[method]["method"] == method
    assert fits["vp"]["objective"] <= fits["grid"]["objective"] * (1 + 1e-6)
    assert fits["vp"]["alpha"] == pytest.approx(fits["grid"]["alpha"], rel=1e-3)
