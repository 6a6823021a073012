"""The demo's whole path (sweep -> collect -> fit with a held-out budget -> plan under its own
law) on a reduced sweep: fewer and smaller runs, the same code as `make demo`."""

from __future__ import annotations

import json
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from scaling import demo
from sweep_files import tiny_shards


@pytest.fixture
def work():
    d = Path(tempfile.mkdtemp(prefix="scaling-demo-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_reduced_demo_reports_held_out_error_degeneracy_and_reach(work, capsys):
    shards = tiny_shards(work / "shards")
    sweep = work / "demo-small.toml"
    # The shipped demo's [train] and [isoflop] settings, on 4 budgets x 3 sizes of tiny runs.
    sweep.write_text(textwrap.dedent(f"""
        [sweep]
        name = "demo-small"
        kind = "isoflop"
        vocab_size = 260
        [isoflop]
        budgets = [3.2e10, 1.6e10, 8e9, 4e9]
        sizes = ["13K", "20K", "40K"]
        steps = 60
        [train]
        data = "{shards}"
        seq_len = 32
        batch_size = 8
        val_points = 3
        val_examples = 64
        [executor]
        cpus_per_task = 1
        parallelism = 2
        time_min = 10
    """))
    out = work / "runs"
    assert demo.main(str(sweep), str(out), data=None, bootstrap=40) == 0
    text = capsys.readouterr().out
    assert "Held-out check: fitted without the largest budget (3.2e+10 FLOPs, 3 runs), 2.00x" in text
    assert "degenerate bootstrap fits (a term vanished):" in text
    assert "What the demo recovered (12 runs, N = params_nonembed)" in text
    fit = json.loads((out / "fit.json").read_text())
    hb = fit["holdout_budget"]
    assert hb["n_runs"] == 3 and hb["n_train"] == 9
    err = hb["approach3"]["mean_abs_rel_error"]
    assert 0 <= err < 1 and f"{100 * err:.2f}% on average" in text
    assert 0 <= fit["approach3"]["bootstrap_degenerate"] <= 40
    b2 = fit["approach2"]["budgets"]
    ok = sum(1 for b in b2 if not b.get("refused"))
    assert f"IsoFLOP profiles with an interior minimum: {ok} of {len(b2)} budgets" in text and len(b2) == 4
    # Rollout over the 4 budgets of 3 sizes: 2 budgets are 6 runs, too few for approach 3's 8;
    # fitted on the smallest 3 (9 runs), it predicts the largest.
    ro = fit["rollout"]
    assert ro["n_budgets"] == 4 and "Rollout over 4 budgets" in text
    assert ro["skipped"]["approach3"] == [1, 2]
    assert [s["fit_budgets"] for s in ro["steps"] if "approach3" in s] == [3]
    reach = json.loads((out / "plan-own.json").read_text())["reach"]
    assert reach["params_factor"] > 1e5 and reach["fitted_max_flops"] == pytest.approx(fit["range"]["flops"][1])
    assert f"extrapolates this law {reach['params_factor']:.3g}x in N" in text
    # It ends with the report, and says where it is.
    page = (out / "report.html").read_text()
    assert f"Report: {out / 'report.html'}" in text and page.count("plotly.js v") == 1
    assert "Held-out check" in page and "Famous models on the frontier" in page
