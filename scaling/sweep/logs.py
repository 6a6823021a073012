"""`scaling sweep logs DIR RUN [--follow] [--err]`: a run's current or last log, on any executor.

The ledger maps the run to its jobs, and jobs/logs.py a job to its files in its launch
folder. The latest job's log is the run's current one; while that job waits and has written
nothing, the log of the run's job before it is its last one (said on stderr). `follow` prints
the file as it grows, like `tail -f`, until the job has ended and its file stopped growing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scaling.base.errors import UserError
from scaling.jobs.ledger import Job, load_ledger
from scaling.jobs.logs import log_path
from scaling.jobs.states import scheduler_state, slurm_states

POLL_S = 0.5          # how often --follow reads the file
STATE_EVERY_S = 2.0   # how often it asks the scheduler whether the job still runs


@dataclass
class RunLog:
    run: str
    job: Job                  # the run's latest job
    path: Path                # the log to print: the latest job's, or the one before it
    latest: Path              # the latest job's log, where it is or will be
    note: str | None = None   # said on stderr: which log this is, when not the latest job's

    def alive(self) -> bool:
        """The job is pending or running (its scheduler, or its local process, says so)."""
        sched = slurm_states([self.job]) if self.job.executor == "slurm" else {}
        return scheduler_state(self.job, sched)[0]


def find_log(dir: str | Path, run: str, err: bool = False) -> RunLog:
    """The log to show for RUN of the sweep directory DIR, or UserError in one line saying why
    there is none (no such sweep or run, never launched, in-process)."""
    dir = Path(dir)
    ledger = load_ledger(dir)
    if ledger is None:
        raise UserError(f"{dir}: sweep directory not found" if not dir.is_dir()
                        else f"{dir}: no sweep.json here: nothing was launched, so no logs")
    entry = ledger.runs.get(run)
    if entry is None:
        names = list(ledger.runs)
        listed = ", ".join(names[:6]) + (f", ... ({len(names)} runs)" if len(names) > 6 else "")
        raise UserError(f"{dir}: no run {run!r} in this sweep (its runs: {listed or 'none'})")
    if not entry.jobs:
        raise UserError(f"{dir}: run {run} was never launched, so it has no log")
    job = entry.jobs[-1]
    path = log_path(dir, job, err)
    if path is None:
        raise UserError(f"{dir}: run {run} ran in-process (debug executor): its output went to the terminal that launched it")
    if path.exists():
        return RunLog(run, job, path, path)
    # The latest job has written nothing yet (pending): the last log is the previous job's.
    for old in reversed(entry.jobs[:-1]):
        prev = log_path(dir, old, err)
        if prev is not None and prev.exists():
            return RunLog(run, job, prev, path, f"job {job.job_id} has no log yet ({path}); "
                                          f"showing job {old.job_id}'s, the run's last")
    return RunLog(run, job, path, path, f"job {job.job_id} has no log yet; it will be {path}")


def show(log: RunLog, follow: bool = False, out=None, poll_s: float = POLL_S) -> int:
    """Print the log (everything in it, then with `follow` what it gains until the job ends).
    Returns 0, or 1 when there is no log to print (the job has not written one)."""
    out = out or sys.stdout
    if log.note:
        print(f"{log.run}: {log.note}", file=sys.stderr)
    reader = _Reader(log.path, out)
    if not follow:
        return 0 if reader.copy() is not None else 1
    last_check = 0.0
    while True:
        if reader.path != log.latest and log.latest.exists():
            # The waiting job started: follow its log from here on.
            print(f"{log.run}: job {log.job.job_id} started; following {log.latest}", file=sys.stderr)
            reader = _Reader(log.latest, out)
        grew = reader.copy()
        if time.monotonic() - last_check > STATE_EVERY_S:
            last_check = time.monotonic()
            # The job ended (or was cancelled before it started, so its own log never comes).
            if not log.alive() and not grew:
                reader.copy()   # what the job wrote as it ended
                return 0 if reader.path.exists() else 1
        time.sleep(poll_s)


class _Reader:
    """A file read on from where the last read ended, decoded as UTF-8 across reads (a
    character split between two reads is written whole)."""

    def __init__(self, path: Path, out):
        import codecs

        self.path, self.out, self.pos = path, out, 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def copy(self) -> int | None:
        """Write what the file gained; its byte count, or None when the file is not there."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return None
        self.pos += len(data)
        text = self.decoder.decode(data)
        if text:
            self.out.write(text)
            self.out.flush()
        return len(data)
