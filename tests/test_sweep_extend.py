"""An off-centre IsoFLOP sweep: the fit names its edge budgets, `scaling sweep extend` writes
the runs beyond each edge as a sweep file for the same directory, and the extended sweep's fit
has an interior minimum at every budget. Grid sweeps: approach 2 says how it slices them."""

from __future__ import annotations

import shutil
import textwrap
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import scaling
from scaling.base.errors import UserError
from scaling.cli import main
from scaling.fit import FitOptions, fit_all, load_runs
from scaling.fit.law import predict_loss
from scaling.jobs.ledger import Ledger, load_ledger
from scaling.sweep.launch import _merge
from scaling.sweep.spec import load_sweep

# A law whose IsoFLOP minima, on these models (bytes vocabulary, seq_len 32), sit at 160K
# (1e12, 4e12) and 320K (1.6e13) of the ladder 20K-1.28M.
LAW = {"E": 1.0, "A": 200.0, "B": 300.0, "alpha": 0.34, "beta": 0.30}

# Off-centre as the sweep was: 1e12 sampled only above its optimum (lowest loss at the
# smallest size), 1.6e13 only below (lowest at the largest), 4e12 around it.
OFF_CENTRE = """
[sweep]
name = "edge"
kind = "isoflop"
vocab_size = 260

[isoflop]
budgets = [1e12, 4e12, 1.6e13]
sizes = [["320K", "640K", "1.28M"], ["80K", "160K", "320K", "640K"], ["40K", "80K", "160K"]]

[train]
seq_len = 32
batch_size = 8
lr = 0.002
"""


def _launched(tmp: Path) -> Path:
    """The sweep directory as `sweep launch` leaves it before its runs start: the ledger of
    every run (what launch records before submitting) and the sweep file as launched."""
    (tmp / "edge.toml").write_text(OFF_CENTRE)
    sweep_dir = tmp / "runs" / "edge"
    _add_to_ledger(tmp / "edge.toml", sweep_dir)
    return sweep_dir


def _add_to_ledger(file: Path, sweep_dir: Path) -> None:
    sweep = load_sweep(file, out=sweep_dir)
    ledger = load_ledger(sweep_dir) or Ledger(sweep_dir, sweep.name, sweep.kind)
    assert ledger.sweep == sweep.name
    _merge(ledger, sweep)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    ledger.save()
    shutil.copy(file, sweep_dir / "sweep.toml")


def _collected(sweep_dir: Path) -> Path:
    """results.parquet as `sweep collect` writes it, each run's loss drawn from LAW."""
    rows = []
    for e in load_ledger(sweep_dir).runs.values():
        tokens = e.config["tokens"]
        rows.append({"run": e.name, "params": e.n_params, "params_nonembed": e.n_params_nonembed, "tokens": tokens,
                     "flops": tokens * e.flops_per_token, "budget": e.budget, "status": "completed",
                     "loss": float(predict_loss(LAW, e.n_params, tokens))})
    pl.DataFrame(rows).write_parquet(sweep_dir / "results.parquet")
    return sweep_dir / "results.parquet"


def _fit(results: Path, **how):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scaling.fit(str(results), n_boot=0, holdout_budget=False, invalid="drop", **how)


def test_fit_names_the_edge_budgets_and_which_way(tmp_path, capsys):
    results = _collected(_launched(tmp_path))
    table = load_runs(results)
    rec = fit_all(table, None, FitOptions(n_boot=0, holdout_budget=False, approaches=(3,), progress=False))
    edges = scaling.fit.Fit(rec, table).edges
    assert [(e.budget, e.side) for e in edges] == [(1e12, "smallest"), (1.6e13, "largest")]
    low, high = edges
    assert low.move < 1 < high.move and len(high.add) == 2 and max(low.add) < low.n_edge and max(high.add) > 4 * high.n_edge
    assert high.run == "C1.6e13-N160K"
    assert main(["fit", str(results), "--bootstrap", "0", "--no-holdout"]) == 0
    out = capsys.readouterr().out
    assert "budget 1e12: lowest loss at the smallest size" in out and "move the sizes down" in out
    assert "budget 1.6e13: lowest loss at the largest size" in out and "move the sizes up ~4.3x: add N=353K, 728K" in out
    assert "budget 4e12" not in out.split("Budgets whose lowest loss")[1] and "N below is column" not in out
    # Fitted in non-embedding N, the sizes to add are in that N: the line says it is not a sweep
    # file's, whose sizes extend writes.
    assert main(["fit", str(results), "--bootstrap", "0", "--no-holdout", "--columns", "params=params_nonembed"]) == 0
    assert "in a sweep file's total N; N below is column 'params_nonembed'" in capsys.readouterr().out


def test_extend_writes_new_runs_only_and_recentres(tmp_path, capsys):
    sweep_dir = _launched(tmp_path)
    _collected(sweep_dir)
    old = set(load_ledger(sweep_dir).runs)
    out = tmp_path / "more.toml"
    assert main(["sweep", "extend", str(sweep_dir), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}: 4 new runs for 2 budget(s)" in said and f"scaling sweep launch {out}" in said

    # The file parses as it is and holds only new runs, of the edge budgets, beyond each edge.
    assert main(["sweep", "plan", str(out)]) == 0
    capsys.readouterr()
    ext = load_sweep(out)
    assert ext.name == "edge" and ext.out == sweep_dir
    assert not {r.name for r in ext.runs} & old
    assert {r.name for r in ext.runs} == {"C1e12-N160K", "C1e12-N80K", "C1.6e13-N320K", "C1.6e13-N640K"}
    assert all(r.config.lr == 0.002 and r.config.seq_len == 32 for r in ext.runs)

    # Launched into the same directory (its ledger takes the new runs beside the old), collected
    # and fitted over all: an interior minimum at every budget, none at an edge.
    _add_to_ledger(out, sweep_dir)
    results = _collected(sweep_dir)
    assert pl.read_parquet(results).height == len(old) + 4
    fit = _fit(results, approaches=(2,))
    assert fit.edges == []
    a2 = fit.record["approach2"]
    assert a2["n_budgets"] == 3 and all(b["refused"] is None for b in a2["budgets"])
    assert main(["sweep", "extend", str(sweep_dir), "--out", str(tmp_path / "again.toml")]) == 0
    assert "nothing to add" in capsys.readouterr().out and not (tmp_path / "again.toml").exists()


def test_extend_from_a_fit_file_and_bad_inputs(tmp_path, capsys):
    sweep_dir = _launched(tmp_path)
    results = _collected(sweep_dir)
    fit_json = tmp_path / "fit.json"
    assert main(["fit", str(results), "--bootstrap", "0", "--no-holdout", "--out", str(fit_json)]) == 0
    assert main(["sweep", "extend", str(fit_json)]) == 0          # default: SWEEP_DIR/extend.toml
    assert load_sweep(sweep_dir / "extend.toml").out == sweep_dir
    capsys.readouterr()

    assert main(["sweep", "extend", str(sweep_dir), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a directory" in capsys.readouterr().err
    assert main(["sweep", "extend", str(tmp_path / "nowhere")]) == 2
    assert "no such sweep directory or fit file" in capsys.readouterr().err
    (results).unlink()
    assert main(["sweep", "extend", str(sweep_dir)]) == 2
    assert "sweep collect" in capsys.readouterr().err
    grid = tmp_path / "g"
    grid.mkdir()
    Ledger(grid, "g", "grid").save()
    with pytest.raises(UserError, match="grid sweep"):
        scaling.sweep.extend.extend(grid, [])


def test_per_budget_sizes_must_match_the_budgets(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(OFF_CENTRE.replace('["40K", "80K", "160K"]]', '"40K"]'))
    with pytest.raises(UserError, match=r"isoflop.sizes: give one list of sizes for all budgets, or one list per budget"):
        load_sweep(bad)
    bad.write_text(OFF_CENTRE.replace('["40K", "80K", "160K"]', "[]"))
    with pytest.raises(UserError, match=r"isoflop.sizes\[2\] must not be empty"):
        load_sweep(bad)


def test_grid_table_gets_flop_slices_not_nan(tmp_path):
    """A grid sweep's results: an all-null budget column. Approach 2 slices runs of equal FLOPs
    and says so; where no two slices hold 3 sizes, it says it needs IsoFLOP budgets."""
    rows = []
    sizes = np.geomspace(1e6, 6.4e7, 7)
    for i, n in enumerate(sizes):
        for j in range(7):
            d = 2.0 ** (j - i) * 4e9      # N x D on anti-diagonals: 7 FLOP levels of several sizes
            rows.append({"run": f"g{i}{j}", "params": n, "tokens": d, "flops": 6 * n * d, "budget": None,
                         "loss": float(predict_loss(LAW, n, d)), "status": "completed"})
    df = pl.DataFrame(rows, schema_overrides={"budget": pl.Float64})
    rec = fit_all(load_runs(df), None, FitOptions(n_boot=0, holdout_budget=False, approaches=(2,), progress=False))
    text = " ".join(rec["approach2"]["warnings"])
    assert "nan" not in text and "IsoFLOP slices are the runs whose FLOPs agree within 12%" in text
    assert rec["approach2"]["n_budgets"] >= 2

    sparse = df.filter(pl.col("run").is_in(["g00", "g11", "g22", "g06", "g60"]))   # no slice of 3 sizes
    with pytest.raises(UserError, match="approach 2: it needs IsoFLOP budgets: .* 0 of the .* slices hold 3 or more sizes"):
        fit_all(load_runs(sparse), None, FitOptions(n_boot=0, holdout_budget=False, approaches=(2,), progress=False))


def test_isoflop_figure_drawn_without_approach_2_edges_ringed_report_says_why(tmp_path):
    from scaling import report

    results = _collected(_launched(tmp_path))
    fit = _fit(results, options=FitOptions(approaches=(1, 2), n_boot=0, holdout_budget=False, progress=False))
    assert "approach2" not in fit.record                     # 1 budget with an interior optimum
    fig = fit.plot.isoflop()
    ringed = [t for t in fig.data if t.marker.symbol == "circle-open"]
    assert len(ringed) == 4                                  # 2 edge budgets x (N, D) panels
    assert "move the sizes up" in " ".join(t.text[0] for t in ringed)
    assert "no approach 2 in this fit:<br>1 FLOP budget(s) with an interior optimum" in fig.layout.title.text

    page = report.render(report.load(sweep_dir := results.parent, bootstrap=0))
    assert 'id="fig-isoflop-plot"' in page and "ringed" in page
    # A figure that cannot be drawn is there, saying why: the plan figures without a plan.
    assert page.count("Not drawn: it draws a plan") == 2
    assert sweep_dir.is_dir()


def test_an_edge_at_the_smallest_buildable_model(tmp_path, capsys):
    """Below about 13K parameters no model of this vocabulary can be built: extend adds the
    last one half a step down, says why it stops, and refuses once nothing can be added."""
    (tmp_path / "small.toml").write_text(OFF_CENTRE.replace(
        'budgets = [1e12, 4e12, 1.6e13]', 'budgets = [2e10]').replace(
        'sizes = [["320K", "640K", "1.28M"], ["80K", "160K", "320K", "640K"], ["40K", "80K", "160K"]]',
        'sizes = ["20K", "40K", "80K"]'))
    sweep_dir = tmp_path / "runs" / "edge"
    _add_to_ledger(tmp_path / "small.toml", sweep_dir)

    def collect_rising_with_n():
        rows = [{"run": e.name, "params": e.n_params, "tokens": e.config["tokens"], "budget": e.budget,
                 "flops": e.config["tokens"] * e.flops_per_token, "status": "completed", "loss": 2 + e.n_params / 1e5}
                for e in load_ledger(sweep_dir).runs.values()]
        pl.DataFrame(rows).write_parquet(sweep_dir / "results.parquet")

    collect_rising_with_n()
    assert main(["sweep", "extend", str(sweep_dir)]) == 0
    said = capsys.readouterr().out
    assert "adds C2e10-N14.1K (N 12.9K)" in said and "nothing smaller than N=12.9K added after 1 size(s)" in said
    _add_to_ledger(sweep_dir / "extend.toml", sweep_dir)
    collect_rising_with_n()
    assert main(["sweep", "extend", str(sweep_dir), "--out", str(tmp_path / "none.toml")]) == 2
    assert "needs a larger budget or a smaller vocabulary" in capsys.readouterr().err
    assert not (tmp_path / "none.toml").exists()


def test_extend_refuses_a_relative_tuned_table_it_cannot_place(tmp_path, capsys):
    """A `{ tuned = DIR }` table was read from the launched file's folder, which the sweep
    directory does not record: extend says so instead of writing a file that reads it elsewhere."""
    sweep_dir = _launched(tmp_path)
    _collected(sweep_dir)
    toml = sweep_dir / "sweep.toml"
    toml.write_text(toml.read_text().replace("lr = 0.002", 'lr = { tuned = "tune/edge" }'))
    assert main(["sweep", "extend", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and "absolute path" in err and len(err.strip().splitlines()) == 1
    assert not (sweep_dir / "extend.toml").exists()


def test_extend_keeps_the_tasks_the_runs_scored(tmp_path, capsys):
    """The new runs score the launched runs' tasks ([eval]; a task file by its absolute path,
    since the new file is read from another folder)."""
    mc = tmp_path / "pick.jsonl"
    mc.write_text('{"prompt": "p", "choices": ["a", "b"], "label": 0}\n')
    (tmp_path / "edge.toml").write_text(OFF_CENTRE + '\n[eval]\ntasks = ["docsum", "pick.jsonl"]\n')
    sweep_dir = tmp_path / "runs" / "edge"
    _add_to_ledger(tmp_path / "edge.toml", sweep_dir)
    _collected(sweep_dir)
    out = tmp_path / "elsewhere" / "more.toml"
    assert main(["sweep", "extend", str(sweep_dir), "--out", str(out)]) == 0
    runs = load_sweep(out).runs
    assert runs and all(r.config.eval == ["docsum", str(mc)] for r in runs)
