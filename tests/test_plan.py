"""`scaling plan`: the optimum against closed forms and brute force, the bill, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.cli import main
from scaling.base.cost import CostAssumptions
from scaling.base.errors import UserError
from scaling.fit.law import optimal_nd
from scaling.plan.training import DEFAULT_LAW, FlopModel, Law, make_plan, optimum, tokens_for_params


def test_6nd_optimum_matches_closed_form():
    law = Law.default(n_samples=50)
    for c in (1e19, 1.2e23, 1e25):
        n, d, _, edge = optimum(law, c, FlopModel("6nd"))
        n0, d0 = optimal_nd(DEFAULT_LAW, c)
        assert not edge[0]
        assert abs(n[0] / n0 - 1) < 2e-3 and abs(d[0] / d0 - 1) < 2e-3


def test_encdec_optimum_beats_brute_force_grid():
    law = Law.default(n_samples=10)
    flop = FlopModel("encdec")
    c = 1.2e23
    n, d, l, _ = optimum(law, c, flop)
    grid = np.geomspace(1e9, 1e12, 20001)
    brute = law.loss(grid, c / flop.per_token(grid))[0]
    assert l[0] <= brute.min() + 1e-9
    assert abs(np.log(n[0] / grid[np.argmin(brute)])) < 1e-3
    assert abs(d[0] * flop.per_token(n[0]) / c - 1) < 1e-9      # on the compute budget


def test_tokens_for_params_makes_n_compute_optimal():
    law = Law.default(n_samples=10)
    flop = FlopModel("encdec")
    d = tokens_for_params(law, 20e9, flop)[0]
    n_opt = optimum(law, float(flop.per_token(20e9)) * d, flop)[0][0]
    assert abs(n_opt / 20e9 - 1) < 0.01
    assert 5 < d / 20e9 < 60


def test_plan_20b_1t_default_law():
    r = make_plan(Law.default(n_samples=400), FlopModel("encdec"), CostAssumptions(), params=20e9, tokens=1e12)
    p, o = r["plan"], r["optimal"]
    assert 18e9 < p["params"] < 19e9 and p["params_target"] == 20e9          # the 20B shape: 18.48B
    assert 1.1e23 < p["flops_6nd"] < 1.12e23                                  # 6ND of that shape, not 1.2e23
    assert 0.8e23 < p["flops_encdec"] < 1.4e23
    assert p["loss_ci"][0] < p["loss"] < p["loss_ci"][1]
    assert p["loss_given_up"] >= 0 and o["loss"] <= p["loss"]
    assert o["params_ci"][0] < o["params"] < o["params_ci"][1]
    assert any("Chinchilla" in w for w in r["warnings"])
    # The bill: FLOPs / (peak * MFU) / 3600, energy = hours * kW * PUE, CO2 = kWh * intensity.
    h = p["flops"] / (312e12 * 0.4) / 3600
    assert r["cost"]["A100"]["gpu_hours"] == pytest.approx(h)
    assert r["cost"]["A100"]["co2_kg"] == pytest.approx(h * 0.4 * 1.1 * 0.385)
    assert r["alexatm_reported"]["gpu_hours"] == 128 * 120 * 24


def test_plan_modes_and_bad_combinations():
    law, flop, cost = Law.default(n_samples=20), FlopModel("6nd"), CostAssumptions()
    r = make_plan(law, flop, cost, compute=1e22)
    assert "plan" not in r and r["optimal"]["params"] > 0
    with pytest.raises(UserError):
        make_plan(law, flop, cost, params=1e9, tokens=1e10, compute=1e22)
    with pytest.raises(UserError):
        make_plan(law, flop, cost)


def test_cli_plan_with_fit_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    true = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.30}
    import polars as pl
    n = np.repeat(np.geomspace(2e7, 1e9, 6), 6)
    d = n * np.tile([5, 10, 20, 40, 80, 160], 6)
    loss = (true["E"] + true["A"] / n ** true["alpha"] + true["B"] / d ** true["beta"]) * np.exp(0.003 * rng.standard_normal(n.size))
    pl.DataFrame({"params": n, "tokens": d, "loss": loss}).write_parquet(tmp_path / "r.parquet")
    assert main(["fit", str(tmp_path / "r.parquet"), "--approach", "3", "--bootstrap", "100",
                 "--out", str(tmp_path / "fit.json"), "--json"]) == 0
    capsys.readouterr()
    assert main(["plan", "--params", "20B", "--tokens", "1T", "--fit", str(tmp_path / "fit.json"), "--json",
                 "--mfu", "0.5"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["law"]["source"].endswith("fit.json") and r["assumptions"]["mfu"] == 0.5
    assert r["plan"]["loss_ci"][0] < r["plan"]["loss"] < r["plan"]["loss_ci"][1]
    assert main(["plan", "--params", "20B"]) == 0
    text = capsys.readouterr().out
    assert "compute-optimal" in text and "AlexaTM reported" in text


@pytest.mark.parametrize("argv, msg", [
    (["plan", "--tokens", "1T"], "--tokens needs --params"),
    (["plan", "--params", "20B", "--tokens", "1T", "--mfu", "2"], "--mfu"),
    (["plan", "--params", "abc"], "--params"),
    (["plan", "--params", "20B", "--fit", "nope.json"], "no such fit file"),
])
def test_cli_plan_bad_input(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_compare_famous_plans_and_toml(tmp_path, capsys):
    f = tmp_path / "plans.toml"
    f.write_text('[[plan]]\nname = "mine"\nparams = "1B"\ntokens = "20B"\n')
    assert main(["plan", "--compare", str(f), "--json", "--flops", "6nd", "--plots", str(tmp_path / "figs")]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["compare"]}
    assert {"GPT-3", "MT-NLG", "PaLM", "Chinchilla", "AlexaTM", "mine"} <= set(rows)
    assert rows["GPT-3"]["overtrained"] < 0.5 < 2 < rows["AlexaTM"]["overtrained"]   # under- vs over-trained
    assert rows["Chinchilla"]["loss_given_up"] < rows["GPT-3"]["loss_given_up"]
    assert all(r["loss_given_up"] >= -1e-9 for r in rows.values())
    n0, _ = optimal_nd(DEFAULT_LAW, rows["PaLM"]["flops"])
    assert abs(rows["PaLM"]["optimal_params"] / n0 - 1) < 2e-3
    assert (tmp_path / "figs" / "plan.html").exists()
    # Each row is the size rule's shape for the plan's size; the table says which it built.
    assert rows["GPT-3"]["params_target"] == 175e9
    assert main(["plan", "--compare", str(f)]) == 0
    built = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("N: the size rule's")]
    assert len(built) == 1 and "GPT-3 175B -> " in built[0], built
    f.write_text('[[plan]]\nname = "x"\n')
    assert main(["plan", "--compare", str(f)]) == 2
    assert "needs name, params and tokens" in capsys.readouterr().err


def test_plan_loss_and_compute_describe_the_same_model():
    """--params 20B is built as the size rule's shape (18.48B parameters with AlexaTM's
    vocabulary): the law must be evaluated at that shape's N and its compute be that
    shape's own FLOPs, not a 20B model's."""
    law = Law.default(n_samples=0)
    flop = FlopModel("encdec")
    r = make_plan(law, flop, CostAssumptions(), params=20e9, tokens=1e12)
    shape = flop.shape(20e9)
    assert (shape.n_enc_layers, shape.n_dec_layers, shape.d_model) == (46, 32, 4096)
    p = r["plan"]
    assert p["params"] == shape.n_params() and p["params_target"] == 20e9
    assert abs(p["params"] / 20e9 - 1) > 0.05                        # the two differ by ~8%
    assert p["flops"] == pytest.approx(shape.flops_per_token(flop.seq_len, flop.noise_density) * 1e12, rel=1e-12)
    assert p["loss"] == pytest.approx(float(law.loss(shape.n_params(), 1e12)[0, 0]), rel=1e-12)
    assert r["compute"] == p["flops"]


def test_cli_plan_reads_a_small_nonembed_fit_without_false_notes(tmp_path, capsys):
    """A laptop-sized fit on non-embedding N, without a bootstrap: the plan reads N as the fit
    did (no 'off by the embeddings' note), names no interval it has not got, and a bill of a
    fraction of a GPU-hour is not printed as 0."""
    from sweep_fixture import write_sweep

    sweep = write_sweep(tmp_path / "sweep")
    assert main(["fit", str(sweep / "results.parquet"), "--columns", "params=params_nonembed", "--bootstrap", "0",
                 "--out", str(tmp_path / "fit.json")]) == 0
    capsys.readouterr()
    assert main(["plan", "--fit", str(tmp_path / "fit.json"), "--compute", "1e15"]) == 0
    text = capsys.readouterr().out
    assert "non-embedding" not in text
    assert "(95% interval)" not in text and "intervals are not available" in text
    a100 = next(line for line in text.splitlines() if line.strip().startswith("A100") and "reported" not in line)
    hours = float(a100.split()[1].replace(",", ""))
    assert hours == pytest.approx(1e15 / (312e12 * 0.4) / 3600, rel=0.01)


def test_a_small_tokens_per_param_is_not_printed_as_zero():
    """A law far from its runs can put the optimum below one token a parameter (a newcomer's
    sweep gave 0.026 [0.0, 112814300.5]): three significant figures below 10."""
    from scaling.plan.text import ratio

    assert [ratio(v) for v in (0.0258, 3.0, 7.25, 21.44, 112814300.5)] == ["0.0258", "3", "7.25", "21.4", "112814300.5"]
