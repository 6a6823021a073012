"""status and collect on run directories written the way the trainer writes them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from scaling.cli import main
from scaling.base.errors import UserError
from scaling.base.rundir import atomic_write_json, write_parquet_atomic
from scaling.jobs.ledger import Job, Ledger, RunEntry, load_ledger
from scaling.sweep.status import sweep_states


def make_run(runs: Path, name: str, status: str, n_params: int = 100_000, tokens: int = 1_000_000,
             loss: float = 3.0, error: str | None = None, val_points: int = 4, budget: float | None = None,
             restarts: int = 0) -> Path:
    d = runs / name
    d.mkdir(parents=True)
    done = status == "completed"
    val = {"mixed": {"loss": loss, "bpb": loss / 2}, "denoise": {"loss": loss - 0.5, "bpb": (loss - 0.5) / 2},
           "clm": {"loss": loss + 1, "bpb": (loss + 1) / 2}} if done else None
    fpt = 6.0 * n_params
    atomic_write_json(d / "run.json", {
        "name": name, "status": status, "config": {"params": str(n_params), "tokens": tokens, "seq_len": 32,
                                                    "extra": {"budget": budget}},
        "n_params": n_params, "n_params_nonembed": n_params // 2, "tokens_budget": tokens,
        "tokens_seen": tokens if done else tokens // 2, "flops": fpt * (tokens if done else tokens // 2),
        "flops_per_token": fpt, "val": val, "wall_time_s": 12.5, "error": error, "device": "cpu",
        "restarts": restarts,
    })
    if status != "running":
        rows = []
        for i in range(1, val_points + 1):
            t = tokens * i // val_points
            rows.append({"split": "train", "step": i, "tokens": t, "flops": fpt * t, "train_loss": loss + 1 / i,
                         "val_loss": None})
            rows.append({"split": "val", "step": i, "tokens": t, "flops": fpt * t, "train_loss": None,
                         "val_loss": loss + 1 / i - 1 / val_points})
        write_parquet_atomic(pl.DataFrame(rows), d / "metrics.parquet")
    return d


@pytest.fixture
def sweep_dir(tmp_path):
    runs = tmp_path / "sw" / "runs"
    make_run(runs, "C1e12-N100K", "completed", budget=1e12, loss=3.0, restarts=2)
    make_run(runs, "C1e12-N200K", "completed", n_params=200_000, budget=1e12, loss=2.8)
    make_run(runs, "C1e12-N400K", "failed", n_params=400_000, budget=1e12, error="RuntimeError: out of memory")
    make_run(runs, "C1e12-N800K", "diverged", n_params=800_000, budget=1e12, error="loss became non-finite at step 7")
    make_run(runs, "C1e12-N50K", "running", n_params=50_000, budget=1e12)
    return tmp_path / "sw"


def test_status_from_run_directories(sweep_dir, capsys):
    states = {s.name: s for s in sweep_states(sweep_dir)}
    assert {n: s.state for n, s in states.items()} == {
        "C1e12-N100K": "completed", "C1e12-N200K": "completed", "C1e12-N400K": "failed",
        "C1e12-N800K": "diverged", "C1e12-N50K": "interrupted"}  # running, but no job is alive
    assert states["C1e12-N400K"].error == "RuntimeError: out of memory"
    assert states["C1e12-N100K"].requeues == 0   # resumed twice (restarts), never requeued
    assert main(["sweep", "status", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "RuntimeError: out of memory" in out
    assert out.strip().splitlines()[-1] == "5 runs: 2 completed, 1 failed, 1 diverged, 1 interrupted"
    assert main(["sweep", "status", str(sweep_dir), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["run"]: r["state"] for r in rows}["C1e12-N800K"] == "diverged"


def test_collect_lists_incomplete_runs_without_their_losses(sweep_dir, capsys):
    assert main(["sweep", "collect", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "not in the fits" in out and "C1e12-N400K (failed)" in out
    res = pl.read_parquet(sweep_dir / "results.parquet")
    assert res.columns[:17] == ["run", "params", "params_nonembed", "tokens", "unique_tokens", "flops", "budget", "loss",
                                "loss_denoise", "loss_clm", "loss_se", "bpb", "bpb_denoise", "bpb_clm", "status",
                                "wall_time_s", "device"]
    assert res.height == 5
    done = res.filter(pl.col("status") == "completed").sort("params")
    assert done["loss"].to_list() == [3.0, 2.8]
    assert done["loss_clm"].to_list() == [4.0, 3.8] and done["bpb_denoise"].to_list() == [1.25, 1.15]
    assert done["budget"].to_list() == [1e12, 1e12] and done["tokens"].to_list() == [1_000_000, 1_000_000]
    assert done["flops"].to_list() == [6e5 * 1e6, 1.2e6 * 1e6]
    rest = res.filter(pl.col("status") != "completed")
    assert rest["loss"].null_count() == 3 and rest["bpb"].null_count() == 3
    assert rest.filter(pl.col("run") == "C1e12-N800K")["error"].item().startswith("loss became non-finite")

    cur = pl.read_parquet(sweep_dir / "curves.parquet")
    assert cur.columns == ["run", "params", "tokens", "flops", "loss"]
    assert sorted(set(cur["run"])) == ["C1e12-N100K", "C1e12-N200K"]  # only completed runs
    one = cur.filter(pl.col("run") == "C1e12-N200K").sort("tokens")
    assert one["tokens"].to_list() == [250_000, 500_000, 750_000, 1_000_000]
    assert one["loss"].to_list()[-1] == pytest.approx(2.8) and one["params"].unique().to_list() == [200_000]


def test_collect_refuses_a_completed_run_without_metrics(sweep_dir, capsys):
    (sweep_dir / "runs" / "C1e12-N100K" / "metrics.parquet").unlink()
    assert main(["sweep", "collect", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert "C1e12-N100K" in err and "metrics" in err
    assert not (sweep_dir / "results.parquet").exists()


def test_bad_directories(tmp_path, capsys):
    assert main(["sweep", "status", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["sweep", "collect", str(tmp_path / "empty")]) == 2
    assert "no sweep here" in capsys.readouterr().err
    bad = tmp_path / "badrun" / "runs" / "x"
    bad.mkdir(parents=True)
    (bad / "run.json").write_text("{not json")
    assert main(["sweep", "status", str(tmp_path / "badrun")]) == 2
    assert "run.json" in capsys.readouterr().err
    (tmp_path / "badledger").mkdir()
    (tmp_path / "badledger" / "sweep.json").write_text('{"sweep": 1}')
    with pytest.raises(UserError, match="sweep.json: not a valid sweep ledger"):
        sweep_states(tmp_path / "badledger")


def test_ledger_runs_without_a_directory_yet_and_recycled_job_ids(sweep_dir):
    """A run the ledger knows but that never started is `not launched`; a Slurm job id that
    now belongs to someone else's job (cluster wiped, ids restarted) is not taken as ours."""
    led = Ledger(sweep_dir, "sw", "isoflop")
    for name in ("C1e12-N100K", "C1e12-N25K"):
        led.runs[name] = RunEntry(name, {"params": "25K", "tokens": 1000}, 25_000, 10_000, 1.5e5, 1e12)
    led.runs["C1e12-N50K"] = RunEntry("C1e12-N50K", {"params": "50K"}, 50_000, 1, 1.0, 1e12,
                                      [Job("slurm", "999999_0", "L", "not-our-job-name", 0.0)])
    led.save()
    assert load_ledger(sweep_dir).runs["C1e12-N50K"].job.job_id == "999999_0"
    states = {s.name: s.state for s in sweep_states(sweep_dir)}
    assert states["C1e12-N25K"] == "not launched"
    assert states["C1e12-N100K"] == "completed"
    assert states["C1e12-N50K"] == "interrupted"


def test_a_job_whose_node_was_lost_is_resubmitted_by_a_plain_relaunch(tmp_path):
    """NODE_FAIL (the node went down mid-job) is not the run's failure: a run whose record is
    still resumable reads `interrupted`, which a relaunch resubmits without --retry-failed.
    A run that recorded a real failure stays failed."""
    from scaling.sweep.launch import RESUBMIT, RETRY
    from scaling.sweep.status import _state

    runs = tmp_path / "sw" / "runs"
    job = Job("slurm", "7_0", "L", "sw-L", 100.0)
    for status, want in (("running", "interrupted"), ("preempted", "preempted"), ("failed", "failed")):
        d = make_run(runs, f"r-{status}", status, error="RuntimeError: boom" if status == "failed" else None)
        entry = RunEntry(d.name, {"params": "100K"}, 100_000, 50_000, 6e5, None, [job])
        st = _state(tmp_path / "sw", d.name, d, entry, {"7_0": ("NODE_FAIL", "sw-L", 100.0)})
        assert st.state == want, (status, st.state, st.error)
        assert (st.state in RESUBMIT) == (status != "failed") and (st.state in RETRY) == (status == "failed")
    d = runs / "never-started"
    entry = RunEntry(d.name, {"params": "100K"}, 100_000, 50_000, 6e5, None, [job])
    st = _state(tmp_path / "sw", d.name, d, entry, {"7_0": ("NODE_FAIL", "sw-L", 100.0)})
    assert st.state == "interrupted" and "node" in st.error
