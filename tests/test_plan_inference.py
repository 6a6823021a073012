"""Inference in the bill: the least training + inference compute at a fixed loss, against a
brute-force grid, the Chinchilla point it must reduce to, its trend, the bill and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.cli import main
from scaling.base.cost import CostAssumptions
from scaling.base.errors import UserError
from scaling.fit.law import optimal_nd
from scaling.plan.inference import Serving, compute_of, inference_plan, least_compute, tokens_at_loss
from scaling.plan.training import DEFAULT_LAW, FlopModel, Law, optimum

LAW = Law.default(n_samples=60)
TARGET = float(LAW.loss(20e9, 1e12)[0, 0])     # AlexaTM 20B / 1T under the default law


def _floor(target):
    p = LAW.params
    return (p["A"] / (target - p["E"])) ** (1 / p["alpha"])


@pytest.mark.parametrize("kind", ["encdec", "6nd"])
@pytest.mark.parametrize("tokens", [1e12, 1e14])
def test_optimum_matches_brute_force_grid(kind, tokens):
    flop, serving = FlopModel(kind), Serving(tokens, 512, 128)
    r = least_compute(LAW, flop, TARGET, serving)
    n = np.geomspace(_floor(TARGET) * 1.0001, _floor(TARGET) * 1e4, 200_001)
    d = tokens_at_loss(LAW, n, TARGET)[0]
    tr, inf = compute_of(flop, serving, n, d)
    total = tr + inf
    i = np.nanargmin(total)
    step = np.log(n[1] / n[0])
    assert abs(np.log(r["params"][0] / n[i])) <= 2 * step
    assert r["train"][0] + r["inference"][0] <= total[i] * (1 + 1e-9)
    # The answer sits on the iso-loss curve.
    assert float(LAW.loss(r["params"][0], r["tokens"][0])[0, 0]) == pytest.approx(TARGET, abs=1e-9)


@pytest.mark.parametrize("kind", ["encdec", "6nd"])
def test_zero_inference_is_the_chinchilla_optimum(kind):
    flop = FlopModel(kind)
    r = least_compute(LAW, flop, TARGET, Serving(0.0))
    c = r["train"][0]
    n_o, d_o, l_o, _ = optimum(LAW, c, flop)       # the training-compute optimum of that compute
    assert abs(r["params"][0] / n_o[0] - 1) < 2e-3 and abs(r["tokens"][0] / d_o[0] - 1) < 2e-3
    assert l_o[0] == pytest.approx(TARGET, abs=1e-6)
    if kind == "6nd":
        n0, d0 = optimal_nd(DEFAULT_LAW, c)
        assert abs(r["params"][0] / n0 - 1) < 1e-6 and abs(r["tokens"][0] / d0 - 1) < 1e-6
    rec = inference_plan(LAW, flop, CostAssumptions(), Serving(0.0), TARGET)
    assert rec["optimal"]["params"] == pytest.approx(rec["chinchilla"]["params"], rel=1e-9)
    assert rec["saving"]["flops"] == pytest.approx(0.0, abs=1e-9 * c)


def test_more_inference_shrinks_n_and_grows_d():
    flop = FlopModel("encdec")
    rs = [least_compute(LAW, flop, TARGET, Serving(t)) for t in (0, 1e11, 1e12, 1e13, 1e14, 1e15)]
    n = [r["params"][0] for r in rs]
    d = [r["tokens"][0] for r in rs]
    assert all(a > b for a, b in zip(n, n[1:])), n
    assert all(a < b for a, b in zip(d, d[1:])), d
    assert n[-1] > _floor(TARGET)                 # still a model that reaches the loss
    # Per bootstrap sample too (each at its own loss for the plan).
    ts = LAW.loss(20e9, 1e12, point=False)[:, 0]
    lo, hi = (least_compute(LAW, flop, ts, Serving(t), point=False) for t in (1e12, 1e14))
    ok = lo["ok"] & hi["ok"]
    assert ok.sum() > 50 and np.all(hi["params"][ok] < lo["params"][ok])


def test_record_bill_and_saving():
    cost = CostAssumptions(inference_mfu=0.2)
    flop = FlopModel("encdec")
    ts = LAW.loss(20e9, 1e12, point=False)[:, 0]
    rec = inference_plan(LAW, flop, cost, Serving(1e13, 512, 128), TARGET, target_samples=ts,
                         target_from="plan", plan=(20e9, 1e12))
    o, c, p = rec["optimal"], rec["chinchilla"], rec["plan"]
    assert o["total_flops"] < c["total_flops"] and o["total_flops"] <= p["total_flops"]
    assert o["params"] < c["params"] and o["tokens_per_param"] > c["tokens_per_param"]
    # Serving runs at its own MFU: GPU-hours = FLOPs / (peak x inference MFU).
    assert o["cost"]["inference"]["A100"]["gpu_hours"] == pytest.approx(o["inference_flops"] / (312e12 * 0.2) / 3600)
    assert o["cost"]["train"]["A100"]["gpu_hours"] == pytest.approx(o["train_flops"] / (312e12 * 0.4) / 3600)
    s = rec["saving"]
    assert s["flops"] == pytest.approx(c["total_flops"] - o["total_flops"])
    assert s["by_gpu"]["H100"]["co2_kg"] == pytest.approx(
        c["cost"]["total"]["H100"]["co2_kg"] - o["cost"]["total"]["H100"]["co2_kg"])
    assert s["flops_pct_ci"][0] < s["flops_pct"] < s["flops_pct_ci"][1]
    assert o["params_ci"][0] < o["params"] < o["params_ci"][1]
    # The GPU-hours objective leans harder on a small model when serving runs at a lower MFU.
    g = inference_plan(LAW, flop, cost, Serving(1e13), TARGET, objective="gpu-hours")
    assert g["optimal"]["params"] < o["params"]
    assert g["saving"]["by_gpu"]["A100"]["gpu_hours"] >= s["by_gpu"]["A100"]["gpu_hours"]


def test_target_below_e_is_an_error(capsys):
    with pytest.raises(UserError, match="irreducible"):
        inference_plan(LAW, FlopModel("6nd"), CostAssumptions(), Serving(1e12), DEFAULT_LAW["E"] - 0.1)
    assert main(["plan", "--target-loss", "1.5", "--inference-tokens", "1T"]) == 2
    assert "irreducible loss" in capsys.readouterr().err


def test_cli_json_keys_and_consistency(capsys):
    assert main(["plan", "--params", "20B", "--tokens", "1T", "--inference-tokens", "10T", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    x = r["inference"]
    assert {"target_loss", "target_from", "objective", "inference_tokens", "input_len", "output_len", "requests",
            "inference_flops_per_token", "optimal", "chinchilla", "saving", "plan", "plan_saving",
            "warnings"} <= set(x)
    for e in (x["optimal"], x["chinchilla"], x["plan"]):
        assert {"params", "tokens", "tokens_per_param", "train_flops", "inference_flops", "total_flops",
                "cost"} <= set(e)
        assert set(e["cost"]) == {"train", "inference", "total"}
        assert {"gpu_hours", "gpu_days", "energy_kwh", "co2_kg", "usd"} <= set(e["cost"]["total"]["A100"])
    assert {"flops", "flops_pct", "by_gpu", "flops_pct_ci"} <= set(x["saving"])
    assert x["target_from"] == "plan" and x["target_loss"] == pytest.approx(r["plan"]["loss"])
    assert x["requests"] == pytest.approx(10e12 / 640)
    assert x["plan"]["train_flops"] == pytest.approx(r["plan"]["flops"])
    assert x["saving"]["flops_pct"] > 0 and x["optimal"]["params"] < 20e9
    # --compute: the target is the compute-optimal model's loss, and that model IS the
    # Chinchilla-optimal one of its loss.
    assert main(["plan", "--compute", "1e23", "--inference-tokens", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["inference"]["target_from"] == "compute-optimal"
    assert r["inference"]["chinchilla"]["params"] == pytest.approx(r["optimal"]["params"], rel=3e-3)
    assert r["inference"]["chinchilla"]["train_flops"] == pytest.approx(1e23, rel=1e-4)


def test_cli_prints_every_assumption_and_writes_figures(tmp_path, capsys):
    assert main(["plan", "--target-loss", "2.1", "--inference-tokens", "2T", "--input-len", "256",
                 "--output-len", "64", "--mfu", "0.5", "--inference-mfu", "0.25", "--pue", "1.3",
                 "--grid-intensity", "0.2", "--a100-power", "0.3", "--h100-price", "3.5",
                 "--plots", str(tmp_path / "figs")]) == 0
    text = capsys.readouterr().out
    assert "inference in the bill" in text and "target loss 2.1000 (given)" in text
    for s in ("MFU 50% (inference 25%)", "PUE 1.3", "grid 0.2 kg CO2/kWh", "300 W", "$3.5/h",
              "256 in + 64 out", "Chinchilla-optimal", "saves"):
        assert s in text, s
    html = (tmp_path / "figs" / "plan.html").read_text()
    assert "training + inference" in html and "least compute" in html and "efficient frontier" in html


def test_compare_famous_plans_served(capsys):
    assert main(["plan", "--compare", "--inference-tokens", "10T", "--json"]) == 0
    rows = {c["name"]: c for c in json.loads(capsys.readouterr().out)["compare"]}
    for c in rows.values():
        x = c["inference"]
        assert x["target_loss"] == pytest.approx(c["loss"])
        assert x["optimal"]["total_flops"] <= min(x["plan"]["total_flops"], x["chinchilla"]["total_flops"]) * (1 + 1e-9)
    # Over-trained AlexaTM serves cheaper than the Chinchilla-optimal model of its loss;
    # under-trained GPT-3 costs more.
    saved = {k: rows[k]["inference"]["plan_saving"]["flops_pct"] for k in ("AlexaTM", "GPT-3")}
    assert saved["AlexaTM"] > 0 > saved["GPT-3"]
    assert main(["plan", "--compare", "--inference-tokens", "1T"]) == 0
    assert "plan saves" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["plan", "--params", "20B", "--inference-tokens", "lots"], "--inference-tokens"),
    (["plan", "--params", "20B", "--inference-tokens", "1T", "--output-len", "0"], "--output-len"),
    (["plan", "--params", "20B", "--target-loss", "2.0"], "--target-loss goes alone"),
    (["plan", "--compare", "--target-loss", "2.0"], "does not combine with --compare"),
    (["plan", "--params", "20B", "--inference-tokens", "1T", "--inference-mfu", "0"], "--inference-mfu"),
])
def test_cli_inference_bad_input(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err
