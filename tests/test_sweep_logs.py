"""`scaling sweep logs` and the log paths and saved progress `sweep status` shows, on sweep
directories laid out as launches leave them (a ledger, launch folders with submitit's log
files, run directories with their checkpoint's last.json); local jobs whose processes are
gone. The Slurm cluster's running and failed runs are tests/test_slurm.py's."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scaling.base.rundir import atomic_write_json, write_checkpoint_info
from scaling.cli import main
from scaling.jobs.ledger import Job, Ledger, RunEntry
from scaling.sweep.status import sweep_states, table

DEAD_PID = "999999999"   # above any pid_max: never a live process


def job(launch: str, job_id: str, executor: str = "local") -> Job:
    return Job(executor, job_id, launch, f"sw-{launch}", time.time())


@pytest.fixture
def sw(tmp_path) -> Path:
    """Run `a`: two local jobs (the latest has no log yet); `b`: failed, with its logs; `c`:
    an in-process (debug) job; `d`: never launched."""
    d = tmp_path / "sw"
    led = Ledger(d, "sw", "grid")
    cfg = {"params": "100K", "tokens": 25_600, "seq_len": 32, "batch_size": 8}
    old, new = job("L1", "101"), job("L2", DEAD_PID)
    led.runs["a"] = RunEntry("a", cfg, 100_000, 50_000, 6e5, None, [old, new])
    led.runs["b"] = RunEntry("b", cfg, 100_000, 50_000, 6e5, None, [job("L1", "102")])
    led.runs["c"] = RunEntry("c", cfg, 100_000, 50_000, 6e5, None, [job("L3", "-", "debug")])
    led.runs["d"] = RunEntry("d", cfg, 100_000, 50_000, 6e5, None, [])
    led.save()
    for j, text in ((old, "a: first job\n"), (led.runs["b"].job, "b: out\n")):
        (d / "launches" / j.launch).mkdir(parents=True, exist_ok=True)
        (d / "launches" / j.launch / f"{j.job_id}_0_log.out").write_text(text)
    (d / "launches" / "L1" / "101_0_log.err").write_text("a: progress é\n")
    (d / "launches" / "L1" / "102_0_log.err").write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
    # a: stopped at step 40 of 100 (run.json's start never reached its end: tokens_seen 0)
    atomic_write_json(d / "runs" / "a" / "run.json", {"status": "running", "config": cfg, "tokens_seen": 0,
                                                       "tokens_per_step": 256, "n_params": 100_000})
    (d / "runs" / "a" / "checkpoints").mkdir()
    (d / "runs" / "a" / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    write_checkpoint_info(d / "runs" / "a", 40, 40 * 256)
    atomic_write_json(d / "runs" / "b" / "run.json", {"status": "failed", "config": cfg, "error": "RuntimeError: boom",
                                                       "tokens_seen": 0, "n_params": 100_000})
    return d


def test_logs_of_the_latest_job_or_the_last_one_that_wrote(sw, capsys):
    assert main(["sweep", "logs", str(sw), "b"]) == 0
    assert capsys.readouterr().out == "b: out\n"
    assert main(["sweep", "logs", str(sw), "b", "--err"]) == 0
    assert "RuntimeError: boom" in capsys.readouterr().out
    # a's latest job has written nothing: its previous job's log, and stderr says so
    assert main(["sweep", "logs", str(sw), "a", "--err"]) == 0
    got = capsys.readouterr()
    assert got.out == "a: progress é\n"
    assert f"job {DEAD_PID} has no log yet" in got.err and "showing job 101's" in got.err, got.err
    # --follow of a job that has ended: what is there, then it returns
    assert main(["sweep", "logs", str(sw), "b", "--follow"]) == 0
    assert capsys.readouterr().out == "b: out\n"


@pytest.mark.parametrize("args, says", [
    (["c"], "ran in-process (debug executor)"),
    (["d"], "run d was never launched"),
    (["zz"], "no run 'zz' in this sweep (its runs: a, b, c, d)"),
])
def test_no_log_is_one_line(sw, capsys, args, says):
    assert main(["sweep", "logs", str(sw), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err, err


def test_no_sweep_is_one_line(tmp_path, capsys):
    assert main(["sweep", "logs", str(tmp_path / "none"), "a"]) == 2
    assert "sweep directory not found" in capsys.readouterr().err
    assert main(["sweep", "logs", str(tmp_path), "a"]) == 2
    assert "no sweep.json here" in capsys.readouterr().err


def test_status_shows_saved_progress_and_log_paths(sw, capsys):
    states = {s.name: s for s in sweep_states(sw)}
    a, b = states["a"], states["b"]
    # a's job is gone, its run unfinished: interrupted, with the progress its checkpoint holds
    assert a.state == "interrupted" and a.tokens_seen == 40 * 256 and a.saved["step"] == 40
    assert b.state == "failed" and b.log_err == sw / "launches" / "L1" / "102_0_log.err"
    assert states["c"].log is None and states["d"].log is None
    text = table(list(states.values()))
    assert "10.2K/25.6K (40%)" in text.splitlines()[1], text
    # a failed run's line keeps its log's path when cut to a narrow terminal
    narrow = table(list(states.values()), width=100).splitlines()[2]
    assert narrow.endswith(f"(log: {b.log_err})") and "..." in narrow, narrow
    assert main(["sweep", "status", str(sw), "--json"]) == 0
    rows = {r["run"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["a"]["saved_step"] == 40 and rows["a"]["tokens"] == 40 * 256
    assert rows["b"]["log_err"] == str(b.log_err) and rows["b"]["log"].endswith("102_0_log.out")
    assert rows["d"]["log"] is None
    # a checkpoint set aside (corrupt) leaves no progress to claim
    (sw / "runs" / "a" / "checkpoints" / "last.ckpt").unlink()
    assert {s.name: s for s in sweep_states(sw)}["a"].tokens_seen == 0
