"""`scaling sweep cancel DIR`: end every pending or running job of a sweep, leaving each run
resumable, and `status` showing it as cancelled; a relaunch resumes them.

- local: a foreground launcher still running is sent SIGTERM, and stops its runs itself
  (each training process once: it finishes its step and checkpoints) and starts no more;
  jobs without their launcher get the same one SIGTERM here (jobs/processes.py).
- slurm: `scancel` of the jobs the ledger records, one call; Slurm sends each task SIGTERM, and
  the trainer finishes its step, checkpoints and ends (scaling/train/callbacks/checkpointing.py)
  before Slurm's kill, KillWait seconds later. We wait until the scheduler says they ended
  (CANCELLED), so `status` right after shows each run cancelled with the progress it saved.
- debug: runs inside its launcher, which is sent SIGTERM.

The run's job record (jobs/<run>.json) keeps `cancelled_job`: a local job's process leaves
no scheduler state behind, and `status` tells a cancelled run from an interrupted one by it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import atomic_write_json
from scaling.jobs import processes
from scaling.jobs.ledger import load_ledger
from scaling.jobs.states import scheduler_state, slurm_states
from scaling.sweep.status import sweep_states


@dataclass
class CancelResult:
    dir: Path
    cancelled: list[str] = field(default_factory=list)   # runs whose job was ended
    launchers: list[int] = field(default_factory=list)   # foreground launchers stopped
    killed: list[str] = field(default_factory=list)      # local jobs that did not stop in time
    ending: list[str] = field(default_factory=list)      # Slurm jobs not yet ended when we stopped waiting

    def describe(self) -> str:
        if not self.cancelled and not self.launchers:
            return f"{self.dir}: nothing pending or running to cancel"
        line = f"{self.dir}: cancelled {len(self.cancelled)} run(s)"
        line += f" ({', '.join(self.cancelled)})" if self.cancelled else ""
        if self.launchers:
            line += f"; stopped the launcher (pid {', '.join(map(str, self.launchers))})"
        if self.killed:
            line += f"; killed {', '.join(self.killed)} (resume from their last checkpoint)"
        if self.ending:
            line += f"; still ending: {', '.join(self.ending)}"
        return line + "; a relaunch resumes them"


def _mark(record: Path, job_id: str | None) -> None:
    """Put `cancelled_job` in the run's job record (made if the job has not written it yet)."""
    try:
        rec = json.loads(record.read_text())
    except (OSError, ValueError):
        rec = {}
    rec.update(cancelled_job=job_id, cancelled_at=time.time())
    atomic_write_json(record, rec)


def cancel(dir: str | Path, wait_s: float = processes.STOP_WAIT_S) -> CancelResult:
    dir = Path(dir)
    ledger = load_ledger(dir)
    if ledger is None:
        if not dir.is_dir():
            raise UserError(f"{dir}: sweep directory not found")
        raise UserError(f"{dir}: no sweep.json here: nothing was launched to cancel")
    result = CancelResult(dir)
    active = [s for s in sweep_states(dir) if s.state in ("running", "pending") and s.entry and s.entry.job]
    for s in active:
        _mark(ledger.job_record(s.name), s.entry.job.job_id)
    result.cancelled = [s.name for s in active]

    # Foreground launchers first: they stop their own runs, each process once.
    launchers = [pid for entry in ledger.launches if (pid := processes.launcher_alive(entry)) is not None]
    for pid in launchers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    result.launchers = launchers
    processes.wait_gone(launchers, wait_s + 30)

    local = [s for s in active if s.entry.job.executor == "local"]
    pids = {s.name: processes.stop(s.entry.job) for s in local if processes.job_tree(s.entry.job)}
    left = processes.wait_gone([p for ps in pids.values() for p in ps], wait_s)
    for s in local:
        if set(pids.get(s.name, [])) & set(left):
            processes.kill(s.entry.job)
            result.killed.append(s.name)

    slurm = {s.name: s.entry.job for s in active if s.entry.job.executor == "slurm"}
    if slurm:
        ids = [j.job_id for j in slurm.values()]
        if shutil.which("scancel") is None:
            raise UserError(f"{dir}: its jobs are Slurm jobs, and scancel is not found here; cancel from a login node")
        r = subprocess.run(["scancel", *ids], capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError(f"scancel {' '.join(ids)}: {(r.stderr or r.stdout).strip() or f'exit {r.returncode}'}")
        result.ending = _wait_slurm_ended(slurm, wait_s)
    return result


def _wait_slurm_ended(jobs: dict, wait_s: float, poll_s: float = 1.0) -> list[str]:
    """Wait until no job of `jobs` (run -> Job) is pending or running for its scheduler, at
    most wait_s; the runs whose job still is."""
    deadline = time.monotonic() + wait_s
    while True:
        sched = slurm_states(list(jobs.values()))
        left = [name for name, job in jobs.items() if scheduler_state(job, sched)[0]]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(poll_s)
