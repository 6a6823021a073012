"""What the scheduler says about our jobs: Slurm states, local processes, and why a job failed.

A sweep's `status` and a tune study's reaper ask the same questions of every job they
submitted (a `Job` of ledger.py): is it still pending or running (`scheduler_state`: Slurm's
state via `slurm_states`, checked by `ours` against a recycled job id; a local job's process
via `local_alive`), and if it ended without a run record, what did it raise (`job_error`,
from submitit's result pickle or the end of its log, cut to one line by `exception_line`).
One `squeue` and one `sacct` call cover all the jobs asked about, so a thousand jobs cost
about as much as one. Nothing here knows what a run or a trial is.
"""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
from pathlib import Path

from scaling.jobs.executors import LAUNCHES
from scaling.jobs.ledger import Job
from scaling.jobs.logs import log_path

# Scheduler states in which a job may still run: never submit a run twice while one is.
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
          "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING"}
FAILED = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
LOST = {"NODE_FAIL", "BOOT_FAIL"}   # the machine failed, not the run

_ARRAY_RANGE = re.compile(r"^(\d+)_\[(.+)\]$")


def _expand(job_id: str) -> list[str]:
    """'12_[3-5,7%2]' -> ['12_3', '12_4', '12_5', '12_7'] (pending array tasks are collapsed)."""
    m = _ARRAY_RANGE.match(job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _ts(text: str) -> float | None:
    """Slurm's local ISO time ('2026-01-31T12:00:00') -> epoch seconds."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


def slurm_states(jobs: list[Job]) -> dict[str, tuple[str, str, float | None]]:
    """job id -> (STATE, job name, submit time) for our Slurm jobs: live ones from squeue,
    finished ones from sacct (needs accounting), just-ended ones from scontrol. Returns {}
    when Slurm's commands are not installed."""
    if not jobs or shutil.which("squeue") is None:
        return {}
    wanted = {j.job_id for j in jobs}
    out: dict[str, tuple[str, str, float | None]] = {}

    def take(text: str) -> None:
        for line in text.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 4:
                continue
            jid, name, state = parts[0], parts[1], parts[2].split()[0] if parts[2] else "UNKNOWN"
            for j in _expand(jid):
                if j in wanted and j not in out:
                    out[j] = (state, name, _ts(parts[3]))

    q = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%j|%T|%V"], capture_output=True, text=True)
    if q.returncode == 0:
        take(q.stdout)
    rest = sorted({j.split("_")[0] for j in wanted - set(out)})
    if rest and shutil.which("sacct"):
        # -X: allocations only; without --duplicates sacct shows a requeued job's latest record.
        for i in range(0, len(rest), 500):
            a = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,JobName,State,Submit", "-j", ",".join(rest[i:i + 500])],
                               capture_output=True, text=True)
            if a.returncode == 0:
                take(a.stdout)
    # Just ended and not yet in the accounting database (it is written asynchronously): the
    # controller still remembers the job for MinJobAge seconds.
    for j in sorted(wanted - set(out))[:50]:
        c = subprocess.run(["scontrol", "-o", "show", "job", j], capture_output=True, text=True)
        first = c.stdout.splitlines()[0] if c.returncode == 0 and c.stdout.strip() else ""
        fields = dict(kv.split("=", 1) for kv in first.split() if "=" in kv)
        if "JobState" in fields:
            out[j] = (fields["JobState"], fields.get("JobName", ""), _ts(fields.get("SubmitTime", "")))
    return out


def ours(job: Job, name: str, submitted: float | None) -> bool:
    """Is the scheduler's job with this id the one we submitted? Ids restart at 1 when a
    cluster's state is wiped. The name is unique per launch, but sacct sometimes reports a
    job cancelled at start as 'allocation'; then the submit time decides."""
    return name == job.name or (submitted is not None and abs(submitted - job.submitted_at) < 300)


def local_alive(job: Job) -> bool:
    """A local job's controller process still exists (checked against pid reuse)."""
    try:
        pid = int(job.job_id)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"submitit" in f.read()
    except (ValueError, OSError):
        return False


def scheduler_state(job: Job | None, sched: dict) -> tuple[bool, str | None]:
    """(alive, the scheduler's state) of a Slurm or local job; `sched` is slurm_states' answer.
    A Slurm job id that names someone else's job now is not alive; a local job alive is
    "RUNNING". No job, or a debug (in-process) one: (False, None), the caller knows better."""
    if job is not None and job.executor == "slurm":
        got = sched.get(job.job_id)
        if got and ours(job, got[1], got[2]):  # a recycled job id (cluster wiped) is not our job
            return got[0] in ACTIVE, got[0]
        return False, None
    if job is not None and job.executor == "local":
        alive = local_alive(job)
        return alive, "RUNNING" if alive else None
    return False, None


def job_error(dir: Path, job: Job) -> str | None:
    """The exception line a job's submitit result holds, for jobs that failed before (or
    without) writing a run record."""
    folder = Path(dir) / LAUNCHES / job.launch
    pkl = folder / f"{job.job_id}_0_result.pkl"
    try:
        with open(pkl, "rb") as f:
            kind, value = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError):
        return _last_error_line(log_path(dir, job, err=True))
    if kind != "error":
        return None
    return exception_line(str(value))


def _last_error_line(path: Path | None) -> str | None:
    if path is None:   # a debug job: no log
        return None
    try:
        return exception_line(path.read_text(errors="replace")[-20000:])
    except OSError:
        return None


_EXC = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\b.*")


def exception_line(text: str) -> str | None:
    """The last 'SomeError: message' line of a traceback (module prefixes dropped)."""
    for ln in reversed(text.strip().splitlines()):
        m = _EXC.match(ln.strip())
        if m:
            return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*:)", "", m.group(0))
    return None


def error_line(e: BaseException) -> str:
    """One line for what a local or Slurm job raised: submitit's error carries the job's
    traceback as text; its last exception line, else the error's own first line."""
    return exception_line(str(e)) or f"{type(e).__name__}: {e}".splitlines()[0]
