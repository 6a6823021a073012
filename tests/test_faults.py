"""What a run guarantees when things go wrong (README: "What a run guarantees"), each on real
runs: kill -9 anywhere (inside a checkpoint write too), a full or read-only disk, corrupt
files, 16 runs finishing into one sweep at the same moment, a sweep relaunched after a
partial failure.

Tiny runs (20K parameters, bytes, seq_len 32). Killed runs are forked from this process,
which has imported torch and Lightning already: a kill -9 of a real training process without
paying a Python start-up per kill.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import traceback
import zipfile
from pathlib import Path

import polars as pl
import pytest

from scaling.base import rundir
from scaling.cli import main
from scaling.base.config import TrainConfig
from scaling.base.errors import WriteError
from scaling.train.run import TrainingRun
from sweep_files import write_sweep_file


def config(shards: Path, out: Path, tokens: int = 100_000, **kw) -> TrainConfig:
    # 390 steps of ~30 ms: long enough to be killed a few times, checkpointed five times a second.
    return TrainConfig(params="20K", tokens=tokens, out=str(out), data=str(shards), seq_len=32, batch_size=8,
                       val_points=3, val_examples=32, progress=False, checkpoint_every_s=0.2, **kw)


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """The uninterrupted runs the interrupted ones must match: (long, short) run records."""
    base = tmp_path_factory.mktemp("reference")
    return (TrainingRun(config(shards, base / "long")).fit(),
            TrainingRun(config(shards, base / "short", tokens=30_000)).fit())


def forked(fn) -> int:
    """Run fn() in a child process; returns its pid (exit 0 when fn returns)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def killed(pid: int, timeout_s: float = 120) -> bool:
    """Whether the child died of SIGKILL. A child still alive after timeout_s (it finished
    its run instead, and a forked child can hang in polars) is killed, and counts as not."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


def checkpoint_step(path: Path) -> int | None:
    """The step of a whole checkpoint; fails the test on a damaged one."""
    import torch

    if not path.exists():
        return None
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None, path
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def history_len(out: Path) -> int:
    """Entries in the run's status history, counting a start only once it has read its checkpoint."""
    try:
        history = json.loads((out / "run.json").read_text())["history"]
    except (OSError, ValueError, KeyError):
        return 0
    return len(history) - (1 if history and history[-1]["step"] is None else 0)


def wait_until(pred, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if got := pred():
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def starts(rec: dict) -> list[int]:
    """The step each start of the run resumed from, from its status history."""
    return [h["step"] for h in rec["history"] if h["status"] == "running"]


def same_run(rec: dict, ref: dict) -> None:
    assert rec["status"] == "completed", rec["error"]
    assert rec["tokens_seen"] == ref["tokens_seen"]
    assert rec["data_digest"] == ref["data_digest"]           # the same examples, each once
    assert rec["val"]["mixed"]["loss"] == pytest.approx(ref["val"]["mixed"]["loss"], rel=0.01)


# ------------------------------------------------------------------------- kill -9
def test_kill_9_anywhere_resumes_from_the_last_complete_checkpoint(shards, reference, tmp_path):
    """Four kills at seeded points: inside the first checkpoint write (nothing whole yet: the
    rerun starts from scratch), at random moments, and inside a later checkpoint write. After
    each, the checkpoint on disk is whole and the next start resumes from exactly its step;
    the finished run equals the uninterrupted one."""
    rng = random.Random(9)
    out = tmp_path / "killed"
    cfg = config(shards, out)
    ckpt = out / "checkpoints" / "last.ckpt"
    points = [("write", 1), ("time", rng.uniform(0.3, 1.2)), ("write", rng.randint(2, 4)), ("time", rng.uniform(0.3, 1.2))]
    found = []   # the step of the whole checkpoint each start finds (0: none, from scratch)
    for kind, at in points:
        found.append(checkpoint_step(ckpt) or 0)
        n = history_len(out)

        def child():
            if kind == "write":   # SIGKILL half-way through the at-th checkpoint's temp file
                rundir.FAULT_IN_WRITE = f"kill@checkpoints/last.ckpt:{at}"
            TrainingRun(TrainConfig(**cfg.to_dict())).fit()
        pid = forked(child)
        if kind == "time":
            wait_until(lambda: history_len(out) > n, 60, "the run to start training")
            time.sleep(at)
            os.kill(pid, signal.SIGKILL)
        assert killed(pid), f"the run was not killed at {kind} {at}"
        step = checkpoint_step(ckpt)   # whole, or absent: never half-written
        if kind == "write":
            assert rundir.stale_temp_files(ckpt.parent), "the kill did not land inside a checkpoint write"
            # the one found at the start if this attempt's first write was hit, else a newer whole one
            assert (step or 0) == found[-1] if at == 1 else (step or 0) > found[-1], (at, step, found)
        assert json.loads((out / "run.json").read_text())["status"] == "running"
    found.append(checkpoint_step(ckpt) or 0)
    assert found[-1] > 0 and len(set(found)) >= 3, found   # the kills did land at different steps

    rec = TrainingRun(TrainConfig(**cfg.to_dict())).fit()
    same_run(rec, reference[0])
    assert starts(rec) == found and rec["restarts"] == len(points)
    assert not rundir.stale_temp_files(ckpt.parent)   # the half-written files were cleared, never read
    steps = pl.read_parquet(out / "metrics.parquet").filter(pl.col("split") == "val")["step"].to_list()
    assert steps == sorted(set(steps))


# ------------------------------------------------------ a full or read-only disk
@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs of its own, to fill up or make read-only under a running run."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        reason = f"cannot mount a tmpfs to fill up ({r.stderr.strip() or r.returncode}): needs root, as in CI"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def remount(mnt: Path, options: str) -> bool:
    return subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], capture_output=True).returncode == 0


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_disk_is_one_line_and_the_checkpoint_survives(shards, reference, small_disk, fault, capsys):
    """Once the run has a checkpoint, its disk fills up (no room left for the next one) or is
    remounted read-only: the run stops with one line naming the file and the reason, exit 2;
    the checkpoint it had is whole, and a rerun with room again resumes from it."""
    out = small_disk / "run"
    cfg = config(shards, out, tokens=30_000)
    ckpt = out / "checkpoints" / "last.ckpt"

    def squeeze():
        wait_until(ckpt.exists, 60, "the first checkpoint")
        def done():
            if fault == "full":   # room for what is there now and 32 KB: not for a second checkpoint
                return remount(small_disk, f"size={shutil.disk_usage(small_disk).used + 32 * 1024}")
            return remount(small_disk, "ro")   # busy while a file is being written: try again
        wait_until(done, 30, f"the disk to be {fault}")
    t = threading.Thread(target=squeeze, daemon=True)
    t.start()
    with pytest.raises(WriteError) as e:   # a UserError: `scaling train` prints "error: <this>", exits 2
        TrainingRun(cfg).fit()
    t.join(5)
    err = str(e.value)
    reason = "No space left on device" if fault == "full" else "Read-only file system"
    # the file that could not be written, named first: the next checkpoint, or the metrics
    # table or run.json when one of them is due first after the disk changed, or the
    # checkpoint's last.json when the disk changed between the two
    named = Path(err.split(": cannot write")[0])
    assert "\n" not in err and reason in err and named in (
        ckpt, ckpt.with_name("last.json"), out / "metrics.parquet", out / "run.json"), err
    assert e.value.exit_code == 2 and "Traceback" not in capsys.readouterr().err
    step = checkpoint_step(ckpt)
    assert step and step < 117
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert not rundir.stale_temp_files(ckpt.parent)

    assert remount(small_disk, "rw,size=16m")
    rec = TrainingRun(TrainConfig(**cfg.to_dict())).fit()
    same_run(rec, reference[1])
    assert starts(rec)[-1] == step


# ------------------------------------------------------------------ corrupt files
def killed_with_a_checkpoint(cfg: TrainConfig) -> int:
    """A run killed -9 once it has a checkpoint; returns that checkpoint's step."""
    out = Path(cfg.out)
    pid = forked(lambda: TrainingRun(TrainConfig(**cfg.to_dict())).fit())
    wait_until((out / "checkpoints" / "last.ckpt").exists, 60, "a checkpoint")
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    assert killed(pid)
    return checkpoint_step(out / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("damaged", ["checkpoint", "run.json"])
def test_a_corrupt_checkpoint_or_record_is_named_and_the_run_restarts(shards, reference, tmp_path, damaged, capsys):
    """A truncated checkpoint is named and set aside, and the run restarts from scratch (the
    last state it can trust); a truncated run.json is named and set aside, and the run resumes
    from its checkpoint. Either way the run ends as the uninterrupted one."""
    cfg = config(shards, tmp_path / "run", tokens=30_000)
    step = killed_with_a_checkpoint(cfg)
    path = Path(cfg.out) / ("checkpoints/last.ckpt" if damaged == "checkpoint" else "run.json")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    rec = TrainingRun(TrainConfig(**cfg.to_dict())).fit()
    err = capsys.readouterr().err
    assert f"warning: {path}: " in err and f"moved to {path}.corrupt" in err, err
    assert Path(f"{path}.corrupt").read_bytes() == data[: len(data) // 2]   # kept for a post-mortem
    same_run(rec, reference[1])
    assert starts(rec)[-1] == (0 if damaged == "checkpoint" else step)
    assert str(path) in rec["set_aside"][0]


# ---------------------------------------------------- sweeps: 16 at once, relaunches
SIZES, TOKENS = ["20K", "25K", "30K", "40K"], ["2K", "3K", "4K", "5K"]


def grid_file(path: Path, shards: Path, sizes=SIZES, tokens=TOKENS) -> Path:
    return write_sweep_file(path, shards, name="faults", kind="grid",
                            train="val_points = 2\nval_examples = 16\nlog_every = 50",
                            body=f"[grid]\nsizes = {json.dumps(sizes)}\ntokens = {json.dumps(tokens)}")


# One of 16 processes finishing a run: the run's last writes (rundir.write_metrics, then the
# record), all released at once when the parent lets go of its lock on the `go` file. A fresh
# process: polars (which writes the metrics) is not fork-safe once its threads run.
FINISH = """
import fcntl, pickle, sys
from pathlib import Path
from scaling.base import rundir
run, go = Path(sys.argv[1]), open(sys.argv[2])
record, rows = pickle.loads((run / "finish.pkl").read_bytes())
(run / "finish.pkl").unlink()
(run / "ready").touch()
fcntl.flock(go, fcntl.LOCK_SH)   # blocks until the parent releases its exclusive lock
rundir.write_metrics(run, rows)
rundir.atomic_write_json(run / rundir.RUN_JSON, record)
(run / "ready").unlink()
"""


@pytest.fixture(scope="module")
def finished_at_once(shards, tmp_path_factory):
    """A sweep of 16 real runs (trained here, one after another) whose last writes -- the
    metrics table and the completed run.json -- are then made by 16 processes at the same
    moment, through the trainer's own writers."""
    import pickle
    import sys

    from scaling.jobs.job import TrainJob
    from scaling.sweep.launch import _merge
    from scaling.jobs.ledger import Ledger
    from scaling.sweep.spec import load_sweep

    base = tmp_path_factory.mktemp("sixteen")
    sweep = load_sweep(grid_file(base / "faults.toml", shards))
    out = base / "sweep"
    ledger = Ledger(out, sweep.name, sweep.kind)
    _merge(ledger, sweep)
    ledger.save()
    assert len(ledger.runs) == 16
    for name, entry in ledger.runs.items():
        rd = ledger.run_dir(name)
        rec = TrainJob({**entry.config, "out": str(rd), "progress": False}, str(ledger.job_record(name)))()
        rows = pl.read_parquet(rd / "metrics.parquet").to_dicts()
        (rd / "metrics.parquet").unlink()
        rundir.atomic_write_json(rd / "run.json", {**rec, "status": "running", "val": None})   # as while training
        (rd / "finish.pkl").write_bytes(pickle.dumps((json.loads(json.dumps(rec)), rows)))   # plain data
    go = base / "go"
    go.touch()
    with open(go) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [subprocess.Popen([sys.executable, "-c", FINISH, str(ledger.run_dir(n)), str(go)]) for n in ledger.runs]
        wait_until(lambda: all((ledger.run_dir(n) / "ready").exists() for n in ledger.runs)
                   or any(p.poll() is not None for p in procs), 120, "16 processes ready to finish")
        time.sleep(0.1)   # from `ready` to the lock call
    assert [p.wait(timeout=120) for p in procs] == [0] * 16
    return base


def test_16_runs_finishing_at_once_are_all_collected(finished_at_once, capsys):
    out = finished_at_once / "sweep"
    assert main(["sweep", "collect", str(out)]) == 0
    assert "16 runs: 16 completed" in capsys.readouterr().out
    res = pl.read_parquet(out / "results.parquet")
    assert res.height == 16 and res["status"].to_list() == ["completed"] * 16 and res["loss"].is_not_null().all()
    assert pl.read_parquet(out / "curves.parquet")["run"].n_unique() == 16
    for d in (out / "runs").iterdir():   # every file whole, no temp file left
        rec = json.loads((d / "run.json").read_text())
        assert rec["status"] == "completed" and pl.read_parquet(d / "metrics.parquet").height > 0
        assert json.loads((out / "jobs" / f"{d.name}.json").read_text())["starts"] == 1
        assert not rundir.stale_temp_files(d)


def test_damaged_files_of_one_run_leave_status_and_collect_working_for_the_others(finished_at_once, capsys):
    """A truncated run.json and an unreadable metrics table: `status` and `collect` report
    every other run, name each damaged file with its path, and exit 2; a plain relaunch
    reruns the run without a record (from scratch) and nothing else."""
    from scaling.sweep.launch import launch
    from scaling.sweep.spec import load_sweep

    out = finished_at_once / "damaged"
    shutil.copytree(finished_at_once / "sweep", out)
    runs = sorted((out / "runs").iterdir())
    bad_rec, bad_metrics = runs[0] / "run.json", runs[1] / "metrics.parquet"
    loss_before = json.loads(bad_rec.read_text())["val"]["mixed"]["loss"]
    bad_rec.write_text(bad_rec.read_text()[:40])
    bad_metrics.write_bytes(b"PAR1 not really")
    capsys.readouterr()
    assert main(["sweep", "status", str(out)]) == 2
    got = capsys.readouterr()
    assert "16 runs: 15 completed, 1 corrupt" in got.out
    assert f"error: {bad_rec}: run record is not valid JSON" in got.err and "Traceback" not in got.err
    assert main(["sweep", "collect", str(out)]) == 2
    got = capsys.readouterr()
    assert f"error: {bad_metrics}: metrics table is unreadable" in got.err and str(bad_rec) in got.err
    res = pl.read_parquet(out / "results.parquet")
    assert res.filter(pl.col("status") == "completed").height == 15 and res.height == 16
    assert set(pl.read_parquet(out / "curves.parquet")["run"]) == {r.name for r in runs[2:]}

    sweep = load_sweep(finished_at_once / "faults.toml")
    again = launch(sweep, "debug", out, progress=False)
    assert again.submitted == [runs[0].name] and not again.errors
    assert list(again.skipped) == ["completed"] and sorted(again.skipped["completed"]) == [r.name for r in runs[1:]]
    rec = json.loads(bad_rec.read_text())
    assert rec["status"] == "completed" and rec["val"]["mixed"]["loss"] == pytest.approx(loss_before, rel=0.01)
    assert Path(f"{bad_rec}.corrupt").exists()


def test_a_relaunch_after_a_partial_failure_reruns_only_what_failed(finished_at_once, shards, tmp_path, monkeypatch):
    """Three runs, one of which fails mid-training (a disk error on a checkpoint write): the
    relaunch reruns that one only, and the sweep's results equal those of the same runs in a
    sweep that never failed (the 16 above), losses within run-to-run noise."""
    from scaling.sweep.collect import results_table
    from scaling.sweep.launch import launch
    from scaling.sweep.spec import load_sweep
    from scaling.sweep.status import sweep_states

    f = grid_file(tmp_path / "faults.toml", shards, sizes=SIZES[:3], tokens=TOKENS[-1:])
    f.write_text(f.read_text().replace("log_every = 50", "log_every = 50\ncheckpoint_every_s = 0.001"))
    sweep = load_sweep(f)
    bad = sweep.runs[1].name
    monkeypatch.setattr(rundir, "FAULT_IN_WRITE", f"eio@runs/{bad}/checkpoints/last.ckpt:3")
    monkeypatch.setattr(rundir, "_writes", {})
    out = tmp_path / "sweep"
    first = launch(sweep, "debug", out, progress=False)
    assert list(first.errors) == [bad] and "Input/output error" in first.errors[bad]
    rec = json.loads((out / "runs" / bad / "run.json").read_text())
    assert rec["status"] == "failed" and 0 < rec["history"][-1]["step"] < rec["steps"]

    monkeypatch.setattr(rundir, "FAULT_IN_WRITE", "")
    again = launch(load_sweep(f), "debug", out, retry_failed=True, progress=False)
    assert again.submitted == [bad] and not again.errors
    assert sorted(again.skipped["completed"]) == sorted(r.name for r in sweep.runs if r.name != bad)
    assert main(["sweep", "collect", str(out)]) == 0
    cols = ["run", "params", "params_nonembed", "tokens", "flops", "status"]
    got = pl.read_parquet(out / "results.parquet").sort("run")
    ref = results_table(sweep_states(finished_at_once / "sweep")).filter(pl.col("run").is_in(got["run"].to_list())).sort("run")
    assert got.height == 3 and got.select(cols).equals(ref.select(cols))
    for a, b in zip(got["loss"], ref["loss"]):
        assert a == pytest.approx(b, rel=0.01)
