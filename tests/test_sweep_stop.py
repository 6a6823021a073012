"""Stopping a sweep, with real processes: Ctrl-C of the launcher (the terminal signals its
whole process group), SIGTERM of the launcher, and `scaling sweep cancel`. Each time the
runs are stopped at a step boundary and checkpointed, no training process is left, and a
relaunch resumes each run from the step it stopped at. `status` shows running runs'
progress and latest loss, and `requeued` stays 0: a relaunch resumes, it does not requeue."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scaling.cli import main
from scaling.sweep.status import sweep_states
from sweep_files import write_sweep_file

RUNS = ("N100K-D200K", "N150K-D200K")


@pytest.fixture
def tmp_path():
    d = Path(tempfile.mkdtemp(prefix="scaling-stop-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def launcher(f: Path, out: Path) -> subprocess.Popen:
    """`scaling sweep launch` in a session of its own (as a shell starts a foreground job:
    Ctrl-C signals the whole group), reporting every 0.3 s."""
    env = {**os.environ, "SCALING_JOB_REPORT_S": "0.3", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "scaling.cli", "sweep", "launch", str(f), "--executor", "local",
                             "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)


def job_record(out: Path, name: str) -> dict:
    try:
        return json.loads((out / "jobs" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(pred, timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if got := pred():
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the launcher ended ({proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def training(out: Path) -> list[int]:
    """Processes whose command line names the sweep directory (jobs of its launches)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if str(out).encode() in cmd and state != b"Z":
            found.append(int(pid))
    return found


def checkpointed_past(out: Path, steps: dict[str, int]) -> bool:
    """Every run is training and has reported a step beyond `steps` (where it last stopped)."""
    return all(job_record(out, n).get("step", 0) > steps.get(n, 0) + 5 and job_record(out, n).get("loss") is not None
               and (out / "runs" / n / "checkpoints" / "last.ckpt").exists() for n in RUNS)


def stopped_steps(out: Path) -> dict[str, int]:
    """The step each run stopped at, which its run record and checkpoint agree on."""
    import torch

    got = {}
    for n in RUNS:
        rec = json.loads((out / "runs" / n / "run.json").read_text())
        assert rec["status"] == "running" and rec["history"][-1]["status"] == "stopped", rec["history"]
        step = rec["history"][-1]["step"]
        ckpt = torch.load(out / "runs" / n / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == step > 0
        got[n] = step
    return got


def resumed_from(out: Path) -> dict[str, list[int]]:
    return {n: [h["step"] for h in json.loads((out / "runs" / n / "run.json").read_text())["history"]
                if h["status"] == "running"] for n in RUNS}


def test_ctrl_c_sigterm_and_cancel_stop_the_runs_checkpointed_and_a_relaunch_resumes(tmp_path, shards, capsys):
    f = write_sweep_file(tmp_path / "stop.toml", shards, name="stop", kind="grid",
                         train="val_points = 2\nval_examples = 16\nlog_every = 5\ncheckpoint_every_s = 0.5\nlr = 0.003\n",
                         executor="parallelism = 2\ntime_min = 10", body="""
                             [grid]
                             sizes = ["100K", "150K"]
                             tokens = ["200K"]
                         """)
    out = tmp_path / "out"

    # 1. Ctrl-C: SIGINT to the launcher's whole group, as a terminal sends it.
    p = launcher(f, out)
    wait_for(lambda: checkpointed_past(out, {}), 240, "both runs to train and checkpoint", p)
    capsys.readouterr()
    assert main(["sweep", "status", str(out)]) == 0
    table = capsys.readouterr().out
    for n in RUNS:   # progress and the latest training loss of each running run
        line = next(ln for ln in table.splitlines() if ln.startswith(n))
        assert re.search(r"running\s+\S+\s+\S+/200K \(\d+%\)\s+1\s+\d+\.\d{3}\b", line), line
    os.killpg(p.pid, signal.SIGINT)
    err = p.communicate(timeout=180)[1]
    assert p.returncode == 130, err
    assert "Traceback" not in err, err
    assert f"interrupted (Ctrl-C): 2 running run(s) stopped and checkpointed" in err, err
    assert f"scaling sweep launch {f}" in err.splitlines()[-1]
    assert training(out) == []
    first = stopped_steps(out)
    assert {s.name: s.state for s in sweep_states(out)} == {n: "interrupted" for n in RUNS}

    # 2. SIGTERM of the launcher alone (a job scheduler's, `kill`'s): the same, exit 143.
    p = launcher(f, out)
    wait_for(lambda: checkpointed_past(out, first), 240, "both runs to resume and checkpoint", p)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=180)[1]
    assert p.returncode == 143 and "Traceback" not in err, err
    assert "interrupted (SIGTERM): 2 running run(s) stopped and checkpointed" in err
    assert training(out) == []
    second = stopped_steps(out)
    assert all(second[n] > first[n] for n in RUNS)

    # 3. `scaling sweep cancel`: the launcher is stopped, the runs show as cancelled.
    p = launcher(f, out)
    wait_for(lambda: checkpointed_past(out, second), 240, "both runs to resume and checkpoint", p)
    capsys.readouterr()
    assert main(["sweep", "cancel", str(out)]) == 0
    said = capsys.readouterr().out
    assert "cancelled 2 run(s)" in said and "stopped the launcher" in said and "2 cancelled" in said, said
    assert p.wait(timeout=30) == 143
    assert training(out) == []
    third = stopped_steps(out)
    assert {s.name: s.state for s in sweep_states(out)} == {n: "cancelled" for n in RUNS}

    # 4. A relaunch resumes each run where it stopped, to the end; nothing was requeued.
    assert main(["sweep", "launch", str(f), "--executor", "local", "--out", str(out)]) == 0
    states = {s.name: s for s in sweep_states(out)}
    assert {n: s.state for n, s in states.items()} == {n: "completed" for n in RUNS}
    assert resumed_from(out) == {n: [0, first[n], second[n], third[n]] for n in RUNS}
    assert all(s.requeues == 0 for s in states.values())
    assert all(s.record["restarts"] == 3 for s in states.values())


def test_cancel_of_a_slurm_sweep_scancels_its_jobs_and_status_shows_them_cancelled(tmp_path, monkeypatch, capsys):
    """The Slurm path with the scheduler's commands stood in for by scripts (the real cluster
    is tests/test_slurm.py's): one scancel of the ledger's running and pending jobs, none of
    the completed run's; then sacct's CANCELLED is the runs' state."""
    from scaling.base.rundir import atomic_write_json
    from scaling.jobs.ledger import Job, Ledger, RunEntry

    bin_, log = tmp_path / "bin", tmp_path / "scancel.log"
    bin_.mkdir()
    gone = tmp_path / "gone"
    stamp = "2026-12-06T12:00:00"
    scripts = {
        "squeue": f'[ -e {gone} ] || printf "7_0|sw-L|RUNNING|{stamp}\\n7_1|sw-L|PENDING|{stamp}\\n"',
        "sacct": f'[ -e {gone} ] && printf "7_0|sw-L|CANCELLED by 0|{stamp}\\n7_1|sw-L|CANCELLED by 0|{stamp}\\n7_2|sw-L|COMPLETED|{stamp}\\n"; true',
        "scontrol": "exit 1",
        "scancel": f'echo "$@" >> {log}; touch {gone}',
    }
    for name, body in scripts.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")

    sw = tmp_path / "sw"
    from datetime import datetime
    t = datetime.fromisoformat(stamp).timestamp()
    led = Ledger(sw, "sw", "grid")
    for i, name in enumerate(("a", "b", "c")):
        led.runs[name] = RunEntry(name, {"params": "100K", "tokens": 1000}, 100_000, 50_000, 6e5, None,
                                  [Job("slurm", f"7_{i}", "L", "sw-L", t)])
    led.save()
    atomic_write_json(sw / "runs" / "c" / "run.json", {"status": "completed", "config": {}})
    assert {s.name: s.state for s in sweep_states(sw)} == {"a": "running", "b": "pending", "c": "completed"}
    assert main(["sweep", "cancel", str(sw)]) == 0
    out = capsys.readouterr().out
    assert "cancelled 2 run(s) (a, b)" in out and "2 cancelled" in out, out
    assert log.read_text().split() == ["7_0", "7_1"]
    assert {s.name: s.state for s in sweep_states(sw)} == {"a": "cancelled", "b": "cancelled", "c": "completed"}
    assert main(["sweep", "cancel", str(sw)]) == 0
    assert "nothing pending or running to cancel" in capsys.readouterr().out
