"""Runs of several processes (Lightning DDP over gloo, on CPU): one run directory, one record,
the 1-process run's batches and gradient, faults that stop every process together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from scaling.cli import main
from scaling.base.config import TrainConfig
from scaling.train.distributed import check_world, current
from scaling.base.errors import UserError
from scaling.train.run import TrainingRun

# 60 steps of a global batch of 16 sequences: long enough to checkpoint and kill mid-run.
ARGS = ["--params", "300K", "--tokens", str(16 * 32 * 60), "--seq-len", "32", "--batch-size", "16",
        "--val-points", "3", "--no-progress"]


def _rec(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: the same config on one process."""
    out = tmp_path_factory.mktemp("ddp") / "one"
    assert main(["train", *ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two processes, each accumulating its 8 sequences in 2 micro-batches of 4."""
    out = tmp_path_factory.mktemp("ddp") / "two"
    assert main(["train", *ARGS, "--devices", "2", "--micro-batch", "4", "--out", str(out)]) == 0
    return out


def test_two_processes_train_the_one_process_run(single, pair):
    one, two = _rec(single), _rec(pair)
    assert two["status"] == "completed" and two["world_size"] == 2
    assert (two["batch_per_rank"], two["micro_batch"], two["accumulation"]) == (8, 4, 2)
    assert (one["world_size"], one["accumulation"]) == (1, 1)
    # The same examples (the digest sums over the union of ranks and micro-batches) ...
    assert two["tokens_seen"] == one["tokens_seen"] == 60 * 16 * 32
    assert two["data_digest"] == one["data_digest"]
    # ... and the same gradient each step (normalised by the global batch's target tokens):
    # the runs agree to float summation order (measured 3e-8 relative), far inside a resumed run's 5%.
    assert two["val"]["mixed"]["loss"] == pytest.approx(one["val"]["mixed"]["loss"], rel=1e-3)
    # Training losses are reduced over ranks before they are logged: rank 0 alone would differ.
    a = pl.read_parquet(single / "metrics.parquet").filter(pl.col("split") == "train").sort("step")
    b = pl.read_parquet(pair / "metrics.parquet").filter(pl.col("split") == "train").sort("step")
    assert a["step"].to_list() == b["step"].to_list()
    for x, y in zip(a["train_loss"], b["train_loss"]):
        assert y == pytest.approx(x, rel=1e-3)
    # One run directory: one record, one metrics file, no per-rank leftovers.
    assert sorted(p.name for p in pair.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in single.iterdir() if not p.name.startswith("."))


def test_a_completed_ddp_run_is_not_retrained(pair):
    before = (pair / "run.json").read_text()
    t = time.time()
    assert main(["train", *ARGS, "--devices", "2", "--micro-batch", "4", "--out", str(pair)]) == 0
    assert time.time() - t < 15 and (pair / "run.json").read_text() == before


def _start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scaling.cli", "train", *ARGS, "--devices", "2", "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(pred, proc: subprocess.Popen, timeout_s: float = 240.0):
    deadline = time.time() + timeout_s
    while not pred() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_then_resume_gives_the_same_run(single, tmp_path):
    out = tmp_path / "killed"
    proc = _start(out, "--checkpoint-every", "0.3")
    ckpt = out / "checkpoints" / "last.ckpt"
    _wait_for(ckpt.exists, proc)
    time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(proc.pid, signal.SIGKILL)       # the supervisor: its workers must not live on
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(map(_alive, workers)):
        time.sleep(0.2)
    assert not any(map(_alive, workers)), "workers outlived their killed supervisor"
    assert _rec(out)["status"] == "running"
    assert main(["train", *ARGS, "--devices", "2", "--out", str(out)]) == 0
    resumed, ref = _rec(out), _rec(single)
    assert resumed["status"] == "completed" and resumed["restarts"] == 1
    assert resumed["tokens_seen"] == ref["tokens_seen"] and resumed["data_digest"] == ref["data_digest"]
    assert resumed["val"]["mixed"]["loss"] == pytest.approx(ref["val"]["mixed"]["loss"], rel=0.05)


def test_sigterm_stops_every_process_at_the_same_step(tmp_path):
    out, long_run = tmp_path / "term", ["--tokens", str(16 * 32 * 120)]   # argparse: the last --tokens wins
    proc = _start(out, *long_run, "--checkpoint-every", "0.3")
    _wait_for((out / "checkpoints" / "last.ckpt").exists, proc)   # training
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 1
    rec = _rec(out)
    assert rec["status"] == "running" and rec["error"].startswith("stopped at step"), rec["error"]
    assert 0 < rec["tokens_seen"] < 120 * 16 * 32 and (out / "checkpoints" / "last.ckpt").exists()
    # Both ranks stopped after the same step and the checkpoint holds the digest of both
    # ranks' examples: the resumed run ends with the uninterrupted 1-process run's digest.
    assert main(["train", *ARGS, *long_run, "--devices", "2", "--out", str(out)]) == 0
    ref = tmp_path / "ref"
    assert main(["train", *ARGS, *long_run, "--out", str(ref)]) == 0
    assert _rec(out)["data_digest"] == _rec(ref)["data_digest"]
    assert _rec(out)["val"]["mixed"]["loss"] == pytest.approx(_rec(ref)["val"]["mixed"]["loss"], rel=0.05)


@pytest.mark.parametrize("extra, needle", [
    (["--batch-size", "15", "--devices", "2"], "--batch-size (15) must be a multiple of the world size"),
    (["--devices", "2", "--micro-batch", "3"], "--micro-batch (3) must divide each process's share"),
])
def test_a_batch_that_does_not_split_is_refused(tmp_path, capsys, extra, needle):
    out = tmp_path / "bad"
    assert main(["train", *ARGS, *extra, "--out", str(out)]) == 2
    assert needle in capsys.readouterr().err and not out.exists()


def test_where_ranks_come_from(monkeypatch):
    for var in list(os.environ):
        if var.startswith(("SLURM_", "SUBMITIT_", "SCALING_RANK")):
            monkeypatch.delenv(var)
    assert current().source == "single" and current().world == 1
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert current().source == "single"               # a 1-task Slurm job
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NODEID", "1")
    p = current()
    assert (p.source, p.rank, p.world, p.node_rank, p.is_main) == ("slurm", 3, 4, 1, False)
    with pytest.raises(UserError, match="asks for 2 process.*slurm started 4"):
        check_world(p, 2)
    for var in ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_NODEID"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "2")
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    p = current()
    assert (p.source, p.rank, p.world) == ("submitit-local", 1, 2) and 20000 <= p.port < 30000
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "0")
    assert current().port == p.port                      # every task of the job agrees


def test_a_ddp_run_that_cannot_start_says_why(tmp_path):
    # A world the scheduler did not give: refused before anything is written.
    os.environ["SLURM_NTASKS"], os.environ["SLURM_PROCID"] = "3", "0"
    try:
        with pytest.raises(UserError, match="asks for 2 process"):
            TrainingRun(TrainConfig(params="300K", tokens=16 * 32 * 4, seq_len=32, devices=2,
                                    out=str(tmp_path / "r"))).fit()
    finally:
        del os.environ["SLURM_NTASKS"], os.environ["SLURM_PROCID"]
    assert not (tmp_path / "r").exists()
