"""Launching real (tiny) training runs with the local and debug executors: no Slurm needed."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest

from scaling.cli import main
from scaling.sweep.launch import launch
from scaling.sweep.spec import load_sweep
from scaling.sweep.status import sweep_states
from sweep_files import QUICK_VAL, write_sweep_file


@pytest.fixture
def tmp_path():
    """A private temporary directory. Not pytest's: pytest keeps only its 3 latest base
    directories, so concurrent pytest sessions on one machine delete each other's, under
    jobs that are still writing there."""
    d = Path(tempfile.mkdtemp(prefix="scaling-sweep-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def sweep_file(tmp_path: Path, shards: Path, body: str, train: str = "") -> Path:
    return write_sweep_file(tmp_path / "tiny.toml", shards, name="tiny", kind="isoflop", body=body,
                            train=QUICK_VAL + train,
                            executor="parallelism = 2\ntime_min = 10")


def test_local_sweep_runs_collects_and_relaunches_idempotently(tmp_path, shards, capsys):
    f = sweep_file(tmp_path, shards, """
        [isoflop]
        budgets = [3e10]
        sizes = ["100K", "150K"]
    """)
    out = tmp_path / "out"
    assert main(["sweep", "launch", str(f), "--executor", "local", "--out", str(out)]) == 0
    assert "2 submitted" in capsys.readouterr().out
    states = {s.name: s for s in sweep_states(out)}
    assert {n: s.state for n, s in states.items()} == {"C3e10-N100K": "completed", "C3e10-N150K": "completed"}

    sweep = load_sweep(f)
    for r in sweep.runs:
        rec = states[r.name].record
        # the run trained the planned model on exactly the planned tokens: the budget, to a batch
        assert rec["n_params"] == r.n_params and rec["tokens_seen"] == r.tokens
        assert rec["flops"] == pytest.approx(r.flops) and 3e10 - 256 * r.flops_per_token < rec["flops"] <= 3e10
        assert rec["config"]["progress"] is False

    assert main(["sweep", "collect", str(out)]) == 0
    res = pl.read_parquet(out / "results.parquet")
    assert res["status"].to_list() == ["completed", "completed"]
    assert res["budget"].to_list() == [3e10, 3e10] and res["loss"].is_not_null().all()
    assert (res["loss"] < 5.6).all()  # below the uniform-guess loss ln(260) = 5.56
    cur = pl.read_parquet(out / "curves.parquet")
    assert set(cur["run"]) == set(states) and cur.height >= 2 * 2

    # relaunch: nothing to do, nothing submitted, no new launch folder
    launches = sorted((out / "launches").iterdir())
    assert main(["sweep", "launch", str(f), "--executor", "local", "--out", str(out)]) == 0
    assert "0 submitted; skipped: 2 completed" in capsys.readouterr().out
    assert sorted((out / "launches").iterdir()) == launches


def test_failed_runs_are_reported_and_retried_only_when_asked(tmp_path, shards, capsys):
    # A GPU asked for on a CPU machine: the run fails inside training and records why.
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU to make a run fail")
    f = sweep_file(tmp_path, shards, """
        [isoflop]
        budgets = [1e10]
        sizes = ["100K"]
    """, train='device = "cuda"')
    out = tmp_path / "out"
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out)]) == 1
    assert "failed C1e10-N100K: " in capsys.readouterr().err
    (st,) = sweep_states(out)
    assert st.state == "failed" and "no GPU is visible" in st.error
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out), "--dry-run"]) == 0
    assert "0 to submit; skipped: 1 failed" in capsys.readouterr().out
    res = launch(load_sweep(f), "debug", out, retry_failed=True, progress=False)
    assert res.submitted == ["C1e10-N100K"] and "no GPU is visible" in res.errors["C1e10-N100K"]


def test_changed_sweep_file_does_not_reuse_a_run_directory(tmp_path, shards, capsys):
    f = sweep_file(tmp_path, shards, """
        [isoflop]
        budgets = [3e9]
        sizes = ["100K"]
    """)
    out = tmp_path / "out"
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out)]) == 0
    # Not on a terminal (a log, a notebook): a line as the launch starts and as each run ends.
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("1 run(s) to train") and " completed, loss " in err[1] and err[1].endswith("(1/1)")
    changed = tmp_path / "changed.toml"
    changed.write_text(f.read_text().replace("batch_size = 8", "batch_size = 4"))
    assert main(["sweep", "launch", str(changed), "--executor", "debug", "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "batch_size" in err
    # A mistyped data path is not a new experiment: the error names the path, not the run.
    typo = tmp_path / "typo.toml"
    typo.write_text(f.read_text().replace(f'data = "{shards}"', f'data = "{shards}-typo"'))
    assert main(["sweep", "launch", str(typo), "--executor", "debug", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"train.data = '{shards}-typo': no such file or directory" in err and "different config" not in err


def test_stated_vocabulary_must_match_the_data(tmp_path, shards, capsys):
    f = sweep_file(tmp_path, shards, """
        [isoflop]
        budgets = [1e10]
        sizes = ["100K"]
    """)
    f.write_text(f.read_text().replace("vocab_size = 260", "vocab_size = 300"))
    # plan trusts the file where the data is absent, but here it is present and disagrees
    assert main(["sweep", "plan", str(f)]) == 2
    assert "vocabulary of 260" in capsys.readouterr().err


def test_local_executor_runs_a_two_task_ddp_job_as_one_run(tmp_path, shards, capsys):
    """[executor] tasks_per_node = 2 on CPUs: submitit starts two tasks, they form one gloo
    process group, and the sweep gets one run with the 1-process run's examples."""
    body = """
        [grid]
        sizes = ["100K"]
        tokens = ["40K"]
    """
    def grid(executor: str) -> Path:
        f = sweep_file(tmp_path, shards, body)
        f.write_text(f.read_text().replace('kind = "isoflop"', 'kind = "grid"').replace("parallelism = 2", executor))
        return f

    one = tmp_path / "one"
    assert main(["sweep", "launch", str(grid("")), "--executor", "local", "--out", str(one)]) == 0
    f = grid("tasks_per_node = 2")
    two = tmp_path / "two"
    capsys.readouterr()
    assert main(["sweep", "plan", str(f)]) == 0
    plan = capsys.readouterr().out
    assert "procs" in plan.splitlines()[0] and "of 2 processes" in plan
    assert main(["sweep", "launch", str(f), "--executor", "local", "--out", str(two)]) == 0
    (a,), (b,) = sweep_states(one), sweep_states(two)
    assert a.state == b.state == "completed", (b.state, b.error)
    assert b.record["world_size"] == 2 and b.world == 2 and a.world == 1
    assert b.record["tokens_seen"] == a.record["tokens_seen"] and b.record["data_digest"] == a.record["data_digest"]
    # float summation order differs (a gradient summed over two processes): measured 8e-4 here
    assert b.record["val"]["mixed"]["loss"] == pytest.approx(a.record["val"]["mixed"]["loss"], rel=1e-2)
    # One job record (rank 0's), counting one start
    job = __import__("json").loads((two / "jobs" / f"{b.name}.json").read_text())
    assert job["starts"] == 1 and job["requeues"] == 0
    capsys.readouterr()
    assert main(["sweep", "status", str(two)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["run", "state", "N", "tokens", "procs"] and lines[1].split()[4] == "2"
