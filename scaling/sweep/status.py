"""Where every run of a sweep stands, from its run directory and the scheduler.

The run directory says how training ended (run.json: completed, diverged, failed); the
scheduler says whether a job is waiting, running, or was cancelled or killed before the
run could write anything (jobs/states.py asks it: one `squeue` and one `sacct` call cover
the whole sweep, so status on a thousand runs costs about as much as reading their run.json
files). `_state` joins the two into one of ORDER's states; `table`, `summary` and `watch`
show them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scaling.base.config import TrainConfig, format_count
from scaling.base.errors import UserError
from scaling.base.rundir import RUN_JSON, RunStatus, checkpoint_info, read_run_json
from scaling.jobs.ledger import JOBS, RUNS, Ledger, RunEntry, load_ledger
from scaling.jobs.logs import log_path
from scaling.jobs.states import FAILED, LOST, job_error, scheduler_state, slurm_states

# Final states of a run, in the order the summary shows them.
ORDER = ("completed", "running", "pending", "failed", "diverged", "cancelled", "timeout",
         "preempted", "interrupted", "corrupt", "not launched")
# Not running and not finished: a relaunch (or the requeued job) resumes from the checkpoint.
RESUMES = {"pending", "failed", "cancelled", "timeout", "preempted", "interrupted", "not launched"}
DONE = {"completed", "failed", "diverged", "cancelled", "timeout", "preempted", "interrupted", "corrupt", "not launched"}


@dataclass
class RunState:
    name: str
    state: str                 # one of ORDER
    error: str | None = None   # first line of the error, for failed / diverged
    requeues: int = 0
    job_id: str | None = None
    scheduler: str | None = None  # raw scheduler state, when known
    record: dict | None = None    # run.json
    entry: RunEntry | None = None
    step: int | None = None       # latest step the job reported (running runs)
    train_loss: float | None = None  # latest training loss the job reported (running runs)
    saved: dict | None = None     # what the run's checkpoint holds (rundir.checkpoint_info)
    log: Path | None = None       # the latest job's stdout log (jobs/logs.py); None: no job
    log_err: Path | None = None   # ... and its stderr log

    @property
    def world(self) -> int:
        """Processes the run trains on (devices x num_nodes)."""
        rec = self.record or {}
        if rec.get("world_size"):
            return int(rec["world_size"])
        cfg = rec.get("config") or (self.entry.config if self.entry else {}) or {}
        return int(cfg.get("devices", 1)) * int(cfg.get("num_nodes", 1))

    @property
    def tokens_seen(self) -> int | None:
        """Tokens trained so far: for a running run its job's report; for a run that is not
        running and not finished (pending again, cancelled, preempted, interrupted, failed)
        what its checkpoint holds, which a relaunch resumes from (run.json says 0 for a
        start that never reached its end); else the run's record."""
        rec = self.record or {}
        if self.state == "running" and self.step is not None:
            cfg = rec.get("config") or (self.entry.config if self.entry else {}) or {}
            per_step = rec.get("tokens_per_step") or _tokens_per_step(cfg)
            return self.step * per_step
        if self.saved is not None and (self.state in RESUMES or self.state == "running"):
            return int(self.saved.get("tokens") or 0)   # (a running run's job has not reported yet)
        return rec.get("tokens_seen")

    @property
    def loss(self) -> float | None:
        """The run's latest loss: the final validation loss of a completed run, the latest
        training loss its job reported for a running one, else None."""
        if self.state == "completed":
            return ((self.record or {}).get("val") or {}).get("mixed", {}).get("loss")
        return self.train_loss if self.state == "running" else None

    @property
    def planned_tokens(self) -> int | None:
        rec = self.record or {}
        return (rec.get("config") or {}).get("tokens") or ((self.entry.config or {}).get("tokens") if self.entry else None)

    def to_dict(self) -> dict:
        return {"run": self.name, "state": self.state, "error": self.error, "requeues": self.requeues,
                "job_id": self.job_id, "scheduler": self.scheduler, "step": self.step,
                "tokens": self.tokens_seen, "tokens_planned": self.planned_tokens, "loss": self.loss,
                "saved_step": (self.saved or {}).get("step"),
                "log": str(self.log) if self.log else None, "log_err": str(self.log_err) if self.log_err else None}


def _tokens_per_step(cfg: dict) -> int:
    """TrainConfig.tokens_per_step of a stored config; 0 when it does not read as one."""
    try:
        return TrainConfig.from_dict(cfg).tokens_per_step
    except (UserError, TypeError):
        return 0


# ------------------------------------------------------------------- discovery
def run_dirs(dir: Path, ledger: Ledger | None) -> dict[str, Path]:
    """Run name -> run directory: the ledger's runs, plus any run directory found under
    DIR/runs/ (or DIR/ itself, for a folder of `scaling train` runs)."""
    dir = Path(dir)
    found: dict[str, Path] = {}
    if ledger is not None:
        found = {n: ledger.run_dir(n) for n in ledger.runs}
    for base in (dir / RUNS, dir):
        if base.is_dir():
            with os.scandir(base) as it:
                for e in it:
                    if e.is_dir() and e.name not in found and os.path.exists(os.path.join(e.path, RUN_JSON)):
                        found[e.name] = Path(e.path)
    # The ledger's order is the sweep's (budget, then size); strays follow by name.
    known = {n: found[n] for n in (ledger.runs if ledger else [])}
    return {**known, **dict(sorted((n, p) for n, p in found.items() if n not in known))}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sweep_states(dir: str | Path) -> list[RunState]:
    dir = Path(dir)
    if not dir.is_dir():
        raise UserError(f"{dir}: sweep directory not found")
    ledger = load_ledger(dir)
    dirs = run_dirs(dir, ledger)
    if ledger is None and not dirs:
        raise UserError(f"{dir}: no sweep here (no sweep.json, and no run directories with run.json)")
    jobs = [r.job for r in (ledger.runs.values() if ledger else []) if r.job is not None]
    sched = slurm_states([j for j in jobs if j.executor == "slurm"])
    return [_state(dir, name, rd, ledger.runs.get(name) if ledger else None, sched) for name, rd in dirs.items()]


def _state(dir: Path, name: str, rd: Path, entry: RunEntry | None, sched: dict) -> RunState:
    job = entry.job if entry else None
    corrupt = None
    try:
        rec = read_run_json(rd)
    except UserError as e:
        # A truncated or edited run.json is this run's problem alone: the others are still
        # reported. A relaunch resubmits it; the trainer sets the file aside and restarts.
        rec, corrupt = None, str(e)
    st = RunState(name, "not launched", record=rec, entry=entry, job_id=job.job_id if job else None,
                  saved=checkpoint_info(rd))
    if job is not None:
        st.log, st.log_err = log_path(dir, job), log_path(dir, job, err=True)
    jrec = _read_json(Path(dir) / JOBS / f"{name}.json") if job is not None else None
    # Requeues only (a job started again by its scheduler, jobs/job.py record_start), summed
    # over the run's jobs; not run.json's `restarts`, which counts every start after the first,
    # the resumptions of a relaunch too.
    if jrec:
        st.requeues = int(jrec.get("requeues") or 0) + int(jrec.get("requeues_before") or 0)
    if jrec and (job is None or jrec.get("job_id") in (job.job_id, None)):
        st.step = jrec.get("step")
        st.train_loss = jrec.get("loss")

    active, sstate = scheduler_state(job, sched)   # a recycled Slurm job id is not our job
    st.scheduler = sstate
    status = RunStatus.of(rec)

    if status == RunStatus.COMPLETED:
        st.state = "completed"
    elif active:
        st.state = "running" if sstate in ("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT") else "pending"
    elif corrupt:
        st.state, st.error = "corrupt", corrupt
    elif sstate == "CANCELLED" or (jrec and job is not None and jrec.get("cancelled_job") == job.job_id):
        # Before the run record: a cancelled job's trainer may have recorded the kill as a
        # failure. `sweep cancel` marks a local job's record (no scheduler remembers it).
        st.state = "cancelled"
    elif status in (RunStatus.DIVERGED, RunStatus.FAILED):
        st.state, st.error = status.value, rec.get("error")
    elif status == RunStatus.PREEMPTED:
        # Checkpointed and requeued by submitit, and the requeued job is not (or no longer)
        # known to the scheduler: a plain relaunch resumes it.
        st.state, st.error = "preempted", rec.get("error")
    elif sstate in ("TIMEOUT", "PREEMPTED"):
        st.state = "timeout"
    elif sstate in LOST and (status is None or status.resumable):
        # The node went down under the job: not the run's failure. Its last checkpoint is
        # whole (atomic writes), so a plain relaunch resumes it.
        st.state, st.error = "interrupted", f"job {job.job_id} ended {sstate} (its node was lost); a relaunch resumes"
    elif sstate in FAILED:
        st.state = "failed"
        st.error = job_error(dir, job) or f"job {job.job_id} ended {sstate}"
    elif job is not None and job.executor == "local" and (err := job_error(dir, job)):
        st.state, st.error = "failed", err  # raised before the run could write its record
    elif status is not None and status.resumable or job is not None:
        # The job is gone but the run never finished: killed outside the scheduler's view,
        # or the scheduler forgot it. A relaunch resumes it from its last checkpoint.
        st.state = "interrupted"
    return st


# ------------------------------------------------------------------------ display
def summary(states: list[RunState]) -> str:
    c = Counter(s.state for s in states)
    parts = [f"{c[k]} {k}" for k in ORDER if c[k]]
    req = sum(s.requeues for s in states)
    tail = f"; {req} requeue{'s' if req != 1 else ''}" if req else ""
    return f"{len(states)} runs: " + ", ".join(parts) + tail


def table(states: list[RunState], width: int | None = None) -> str:
    """One line per run: its state, tokens so far of its budget (and the share: as its job
    last reported it while it runs, as its checkpoint holds it while it waits to resume), its
    loss (the latest training loss while it runs, the final validation loss once completed),
    and a failed run's error with its log's path; errors are cut to the terminal's width only
    when printing to one, the path kept."""
    rows = [("run", "state", "N", "tokens", "procs", "loss", "requeued", "job", "error")]
    tails = [""]
    for s in states:
        rec = s.record or {}
        n = rec.get("n_params") or (s.entry.n_params if s.entry else None)
        planned, seen = s.planned_tokens, s.tokens_seen
        tokens = f"{format_count(seen) if seen is not None else '-'}/{format_count(planned) if planned else '?'}"
        if seen and planned and (s.state == "running" or s.state in RESUMES):
            tokens += f" ({min(seen / planned, 1):.0%})"
        loss = f"{s.loss:.3f}" if s.loss is not None else "-"
        rows.append((s.name, s.state, format_count(n) if n else "-", tokens, str(s.world), loss,
                     str(s.requeues) if s.requeues else "", s.job_id or "", s.error or ""))
        tails.append(f" (log: {s.log_err})" if s.state == "failed" and s.log_err else "")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r, tail in zip(rows, tails):
        head = "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths))
        line = head + ("  " + r[-1] + tail if r[-1] or tail else "")
        if width and len(line) > width:
            # Cut the error, not the log's path after it.
            line = line[: max(width - len(tail) - 3, len(head))] + "..." + tail
        lines.append(line)
    return "\n".join(line.rstrip() for line in lines)


def watch(dir: Path, every: float = 5.0, out=None) -> list[RunState]:
    """Redraw the table until no run is pending or running (Ctrl-C stops watching only)."""
    import sys

    out = out or sys.stdout
    while True:
        states = sweep_states(dir)
        out.write("\x1b[2J\x1b[H" if out.isatty() else "\n")
        width = shutil.get_terminal_size().columns if out.isatty() else None
        out.write(f"{dir}  {time.strftime('%H:%M:%S')}\n{table(states, width)}\n{summary(states)}\n")
        out.flush()
        if all(s.state in DONE for s in states):
            return states
        time.sleep(every)
