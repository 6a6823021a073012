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
        [eval]
        tasks = ["docsum", "nextsent"]
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
    # The count of interior minima comes with approach 2's profiles (these tiny runs give it too few).
    assert ("approach2" in fit) == ("IsoFLOP profiles with an interior minimum" in text)
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
    # Its built-in tasks: scores per run, each task's two-step law (or why not) and the plan's task loss.
    assert "Task scores per run" in text and "docsum.bpb_clm" in text and "nextsent.acc_clm" in text
    for name in ("docsum", "nextsent"):
        law = json.loads((out / f"fit-{name}.json").read_text())["task"]
        assert law["target"] == f"task.{name}.bpb_clm" and law["step1"]["n_runs"] == 12
        assert f"Task {name} (task.{name}.bpb_clm" in text and "lowest per budget: 4e+09 FLOPs" in text
        # Tiny runs may leave step 1 degenerate: then the plan is skipped, and the summary says why.
        if demo.degenerate(out / f"fit-{name}.json"):
            assert not (out / f"plan-{name}.json").exists()
            assert "the 20B / 1T plan: not predicted: step 1's law is degenerate" in text.split(f"Task {name} (")[1]
        else:
            planned = json.loads((out / f"plan-{name}.json").read_text())["task"]
            assert planned["task_loss"] > 0 and f"the 20B / 1T plan: task loss {planned['task_loss']:.3f}" in text
    # docsum has no choices: step 2 is refused for want of an accuracy column, and says so.
    assert "no accuracy column for task.docsum.bpb_clm" in text
    step2 = json.loads((out / "fit-nextsent.json").read_text())["task"]["step2"]
    assert ("refused" in step2) == ("step 2: not fitted" in text.split("Task nextsent (")[1])


def test_summary_counts_the_budgets_with_an_interior_minimum(tmp_path):
    """Approach 2's profiles say which budgets have a minimum inside their sizes; the summary
    counts them and names the ones that do not."""
    budgets = [{"flops": f, "refused": None} for f in (1e11, 2e11, 4e11)] + [{"flops": 8e11, "refused": "at an edge"}]
    fit = {"n_runs": 20, "params_column": "params_nonembed",
           "approach2": {"a": 0.5, "ci": {"a": [0.4, 0.6]}, "budgets": budgets}}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    text = demo.summary(str(tmp_path / "fit.json"), str(tmp_path / "no-plan.json"))
    assert "  IsoFLOP profiles with an interior minimum: 3 of 4 budgets (none at 8e+11 FLOPs)" in text
    assert "approach 1: not fitted" in text and "approach 2: a = 0.500 [0.400, 0.600]" in text
