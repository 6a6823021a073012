"""Recipes compared (`scaling compare`, `scaling.compare`): synthetic sweeps of known laws.

Recipe B is built so that its frontier is A's at C / k: L_B(N, D) = L_A(N / sqrt(k), D / sqrt(k))
under C = 6ND, i.e. A and B scaled by k^(alpha/2) and k^(beta/2). B then needs exactly k times
A's compute at every C, and the comparison must recover k inside its interval; two sweeps of one
law (different noise) must say "no difference". The CLI's refusals are one line each."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

import scaling
from scaling.base.flops import FlopCount
from scaling.cli import main
from scaling.fit import compare as cm
from scaling.fit.law import PARAMS, optimal_nd, predict_loss

TRUE = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.30}
K = 2.0
BUDGETS = (1e17, 4e17, 1.6e18, 6.4e18, 2.56e19)
N_BOOT = 200


def needs_k_times(p: dict, k: float) -> dict:
    """The law whose frontier is p's at C / k under C = 6ND."""
    return {**p, "A": p["A"] * k ** (p["alpha"] / 2), "B": p["B"] * k ** (p["beta"] / 2)}


def sweep(p: dict, seed: int, noise: float = 0.004, budgets=BUDGETS, **extra) -> pl.DataFrame:
    """An IsoFLOP sweep of law p: 5 sizes around the optimum of each budget, log-normal loss noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n0, _ = optimal_nd(TRUE, c)
        for j, f in enumerate(np.geomspace(1 / 4, 4, 5)):
            n, d = n0 * f, c / (6 * n0 * f)
            loss = float(predict_loss(p, n, d)) * np.exp(noise * rng.standard_normal())
            rows.append({"run": f"C{c:.2g}-{j}", "params": n, "tokens": d, "flops": 6 * n * d, "budget": c,
                         "loss": loss, "bpb_clm": loss / np.log(2), "status": "completed", **extra})
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipes")
    out = {}
    for name, df in (("a", sweep(TRUE, 0)), ("b", sweep(needs_k_times(TRUE, K), 1)), ("a2", sweep(TRUE, 2))):
        out[name] = d / f"{name}.parquet"
        df.write_parquet(out[name])
    return out


@pytest.fixture(scope="module")
def known(tables):
    """A against B (needs K times A's compute), extrapolated to a plan's compute."""
    return scaling.compare([tables["a"], tables["b"]], metric="bpb_clm", names=["A", "B"], plan_compute=1e21,
                           n_boot=N_BOOT)


def test_the_multiplier_of_exact_laws_is_k_at_every_compute():
    """The inversion itself, without noise: 6ND laws give k exactly; a law against itself under
    the encoder-decoder count gives 1 (its frontier is not a power law)."""
    c = np.geomspace(1e15, 1e24, 12)
    a = np.array([[TRUE[k] for k in PARAMS]])
    b = np.array([[needs_k_times(TRUE, K)[k] for k in PARAMS]])
    six = FlopCount("6nd")
    assert np.allclose(10 ** cm.log_multiplier(a, six, b, six, c), K, rtol=1e-3)
    encdec = FlopCount("encdec", 32, 0.15, 260, True, nonembed=True)
    assert np.allclose(10 ** cm.log_multiplier(a, encdec, a, encdec, c), 1.0, rtol=1e-3)
    # A loss below B's E is reached at no compute: k is beyond the searched range, not a number.
    low = np.array([[3.0, TRUE["A"], TRUE["B"], TRUE["alpha"], TRUE["beta"]]])
    assert np.all(cm.log_multiplier(a, six, low, six, np.array([1e24])) > cm.LOG_K_MAX)


def test_a_known_multiplier_is_recovered_inside_its_interval(known):
    m = known.multiplier.filter(pl.col("in_range"))
    assert m.height == cm.RANGE_POINTS
    assert (m["k_lower"] < K).all() and (m["k_upper"] > K).all()
    assert ((m["k"] - K).abs() < 0.15 * K).all()
    assert (m["k_lower"] > 1).all() and (m["verdict"] == "A ahead").all()
    # Scaling N and D by sqrt(k) moves the optimum by k^(1/2 - a) ~ 1.02: the ratios hold it.
    o = known.optimal.filter((pl.col("recipe") == "B") & pl.col("in_range"))
    assert ((o["params_ratio_lower"] < 1.2) & (o["params_ratio_upper"] > 0.85)).all()
    plan = known.multiplier.filter(pl.col("compute") == 1e21)
    assert plan.height == 1 and not plan["in_range"][0]
    text = known.summary()
    assert "B against A" in text and "A ahead" in text and "1e+21 (plan)" in text
    assert "the laws' extrapolation" in text


def test_one_law_twice_is_no_difference(tables):
    c = scaling.compare([tables["a"], tables["a2"]], metric="bpb_clm", n_boot=N_BOOT)
    m = c.multiplier.filter(pl.col("in_range"))
    assert ((m["k_lower"] < 1) & (m["k_upper"] > 1)).all()
    assert (m["verdict"] == "no difference").all()
    assert "no difference" in c.summary()


def test_the_cli_prints_json_and_writes_the_figure(tables, tmp_path, capsys):
    code = main(["compare", str(tables["a"]), str(tables["b"]), "--metric", "val_bpb_clm", "--bootstrap", "40",
                 "--plots", str(tmp_path / "plots"), "--json"])
    assert code == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["metric"] == "val_bpb_clm" and [r["column"] for r in rec["recipes"]] == ["bpb_clm", "bpb_clm"]
    assert {r["recipe"] for r in rec["rows"]} == {"a", "b"}
    assert "compute multiplier k(C)" in (tmp_path / "plots" / "compare.html").read_text()


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_the_cli_refuses_bad_inputs_in_one_line(tables, tmp_path, capsys):
    few = tmp_path / "few.parquet"
    sweep(TRUE, 3, budgets=(1e18, 4e18)).head(6).write_parquet(few)
    err = _error(["compare", str(tables["a"]), str(few)], capsys)
    assert "few" in err and "too few runs scored on bpb_clm for a law" in err and "6 runs" in err
    unscored = tmp_path / "decoder.parquet"
    sweep(TRUE, 3).with_columns(bpb_denoise=None).write_parquet(unscored)
    scored = tmp_path / "encdec.parquet"
    sweep(TRUE, 4).with_columns(bpb_denoise=pl.col("bpb_clm")).write_parquet(scored)
    err = _error(["compare", str(scored), str(unscored), "--metric", "bpb_denoise"], capsys)
    assert "none of its 25 completed runs has a value in column 'bpb_denoise'" in err
    err = _error(["compare", str(tables["a"]), str(tables["b"]), "--metric", "bpb_denoise"], capsys)
    assert "no column 'bpb_denoise'" in err and str(tables["a"]) in err and "bpb_clm" in err
    other = tmp_path / "other.parquet"
    sweep(TRUE, 4, data_key="bbbb").write_parquet(other)
    same = tmp_path / "same.parquet"
    sweep(TRUE, 5, data_key="aaaa").write_parquet(same)
    err = _error(["compare", str(same), str(other), "--metric", "loss"], capsys)
    assert "nats" in err and "different data" in err and "bits per byte" in err
    acc = tmp_path / "acc.parquet"
    sweep(TRUE, 6).with_columns(**{"task.x.acc": pl.lit(0.5)}).write_parquet(acc)
    err = _error(["compare", str(acc), str(acc), "--metric", "task.x.acc"], capsys)
    assert "is an accuracy, not a loss: use --metric task.x.bpb" in err
    assert _error(["compare", str(tables["a"])], capsys).endswith("got 1")
    assert "--plan-compute" in _error(["compare", str(tables["a"]), str(tables["b"]), "--plan-compute", "-3"], capsys)
    assert not (tmp_path / "plots").exists()


def test_the_report_has_a_section_when_asked(tables, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(tables["a"]), "--out", str(out), "--bootstrap", "20",
                 "--compare-with", str(tables["b"]), "--compare-metric", "bpb_clm"]) == 0
    capsys.readouterr()
    html = out.read_text()
    assert "<h2 id='recipes'>Recipes compared on bpb_clm</h2>" in html and "href='#recipes'" in html
    assert "a ahead" in html
    assert "--compare-with" in _error(["report", str(tables["a"]), "--out", str(tmp_path / "x.html"),
                                       "--compare-metric", "bpb_clm"], capsys)
    assert not (tmp_path / "x.html").exists()


def test_a_metric_of_each_runs_own_mix_is_flagged_when_the_mixes_differ():
    mix, clm = pl.DataFrame({"clm_ratio": [0.2, 0.2]}), pl.DataFrame({"clm_ratio": [1.0]})
    note = cm._own_mix([(mix, "x", "mix"), (clm, "y", "clm")], "bpb")
    assert "own objective mix" in note and "mix 0.2" in note and "clm 1.0" in note
    assert cm._own_mix([(mix, "x", "mix"), (clm, "y", "clm")], "bpb_clm") is None
    assert cm._own_mix([(mix, "x", "mix"), (mix, "y", "mix2")], "loss") is None
