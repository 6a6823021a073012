"""Where every study stands: trial states from the journal, job liveness from the scheduler.

Optuna's own heartbeat (heartbeat_interval / grace_period / failed_trial_callback) exists for
RDBStorage only; JournalStorage (Optuna 5.0) has none. So dead jobs are found here: a RUNNING
trial whose job the scheduler no longer runs (killed, out of requeues, node lost; a local
process gone) is marked FAIL, and so is one whose job still "runs" but has not written its
record for SCALING_TUNE_GRACE_S seconds (600). A trial stopped cleanly by a signal, with a
checkpoint, is left RUNNING for a rerun to resume. `scaling tune` reaps before it counts
what is missing, and `scaling tune status` before it reports. The scheduler is asked through
jobs/states.py, as a sweep's status asks it; the tune ledger (`Ledger`, `Slot`: one slot per
job submitted) is this module's.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling.base.config import format_count
from scaling.base.errors import UserError
from scaling.base.rundir import atomic_write_json
from scaling.jobs.ledger import Job
from scaling.jobs.states import job_error, scheduler_state, slurm_states
from scaling.tuning.study import JOBS_DIR, LEDGER, LOCK, Space, fail_trial, load, study_names

STATES = ("completed", "running", "pending", "pruned", "failed")


@dataclass
class Slot:
    """One submitted job: slot k of size `key`; `trial` is set when it resumes a known trial."""

    key: str
    k: int
    job: Job
    trial: int | None = None

    def record_path(self, out: Path) -> Path:
        return Path(out) / self.key / JOBS_DIR / f"{self.k}.json"

    def record(self, out: Path) -> dict:
        try:
            return json.loads(self.record_path(out).read_text())
        except (OSError, ValueError):
            return {}


@dataclass
class Ledger:
    out: Path
    slots: list[Slot] = field(default_factory=list)
    launches: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, out: Path) -> "Ledger":
        p = Path(out) / LEDGER
        if not p.exists():
            return cls(Path(out))
        try:
            d = json.loads(p.read_text())
            slots = [Slot(s["key"], s["k"], Job(**s["job"]), s.get("trial")) for s in d["slots"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{p}: not a valid tune ledger ({type(e).__name__}: {e})") from None
        return cls(Path(out), slots, d.get("launches", []))

    def save(self) -> None:
        atomic_write_json(self.out / LEDGER, {
            "version": 1, "launches": self.launches,
            "slots": [{"key": s.key, "k": s.k, "trial": s.trial, "job": s.job.to_dict()} for s in self.slots],
        })

    def next_k(self, key: str) -> int:
        return 1 + max((s.k for s in self.slots if s.key == key), default=-1)


SCHEDULER_LAG_S = 30.0   # how long a job Slurm cannot see, but that reported, counts as alive


def grace_s() -> float:
    return float(os.environ.get("SCALING_TUNE_GRACE_S", "600"))


def lock_held_elsewhere(out: Path) -> bool:
    """Is a `scaling tune` running on OUT now (it holds the lock while its in-process or
    local jobs run)?"""
    try:
        f = open(Path(out) / LOCK, "a")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@dataclass
class JobState:
    alive: bool
    scheduler: str | None = None
    error: str | None = None


def job_states(out: Path, slots: list[Slot], command_running: bool) -> dict[tuple[str, int], JobState]:
    """(key, k) -> is its job alive. Slurm from squeue/sacct; local from the process; a
    debug (in-process) job is alive only while a `scaling tune` holds the lock."""
    sched = slurm_states([s.job for s in slots if s.job.executor == "slurm"])
    out_states = {}
    for s in slots:
        j = s.job
        if j.executor in ("slurm", "local"):
            alive, state = scheduler_state(j, sched)
        else:
            alive, state = command_running, None
        err = None if alive else (job_error(out, j) if j.executor != "debug" else None)
        out_states[(s.key, s.k)] = JobState(alive, state, err)
    return out_states


def reap(out: Path, study, key: str, slots: list[Slot], states: dict, log=None) -> dict:
    """Fail the RUNNING trials of one study whose jobs are dead. Returns what is in flight:
    {"running": [trial numbers alive], "resumable": [...], "pending": [slots not started]}."""
    from optuna.trial import TrialState

    mine = [s for s in slots if s.key == key]
    by_trial: dict[int, tuple[Slot, dict]] = {}
    pending, asking = [], []
    for s in mine:  # later slots win: the latest job of a resumed trial
        rec = s.record(out)
        n = rec.get("trial", s.trial)
        if n is not None:
            by_trial[n] = (s, rec)
        elif states[(s.key, s.k)].alive:
            pending.append(s)
            if rec:
                asking.append(s)  # it has written its record: it is asking for its trial
    running, resumable = [], []
    unclaimed = 0
    now = time.time()
    for t in study.get_trials(deepcopy=False):
        if t.state != TrialState.RUNNING:
            continue
        got = by_trial.get(t.number)
        why = None
        if got is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if now - started > grace_s():
                why = "no job records this trial"
            else:
                running.append(t.number)  # just asked; its job is writing its record
                unclaimed += 1
        else:
            slot, rec = got
            js = states[(slot.key, slot.k)]
            beat = rec.get("updated_at")
            if js.alive and js.scheduler in ("RUNNING", None) and beat and now - beat > grace_s():
                why = f"job {slot.job.job_id} silent for {now - beat:.0f}s (node lost?)"
            elif js.alive:
                running.append(t.number)
            elif (slot.job.executor == "slurm" and js.scheduler is None and beat
                  and now - beat < SCHEDULER_LAG_S):
                # Slurm does not know the job at this instant (an array task between squeue's
                # pending and running lists, not yet in sacct) but it reported moments ago: it
                # is alive. A dead job stops beating and is failed on a later look.
                running.append(t.number)
            elif rec.get("stopped"):
                resumable.append(t.number)
            else:
                why = js.error or f"job {slot.job.job_id} ended{' ' + js.scheduler if js.scheduler else ''} without a result"
        if why and fail_trial(study, t.number, why) and log:
            log(f"trial {t.number} of {key}: marked failed ({why})")
    # A job that has asked for its trial but not yet written the number is counted once, as
    # that running trial, not also as a waiting job: drop as many started jobs from pending.
    for s in asking[:unclaimed]:
        pending.remove(s)
    return {"running": running, "resumable": resumable, "pending": pending}


def summarize(study, flight: dict) -> dict:
    """Counts per state, and the best completed trial so far."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    c = {k: 0 for k in STATES}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            c["completed"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["failed"] += 1
    c["running"] = len(flight["running"])
    c["pending"] = len(flight["pending"])
    c["resumable"] = len(flight["resumable"])
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(done, key=lambda t: t.value) if done else None
    return {"study": study.study_name, "size": study.user_attrs.get("size", {}), "counts": c,
            "best": None if best is None else {"trial": best.number, "loss": best.value, **Space.values(best.params)}}


def tune_status(out: Path, log=None) -> list[dict]:
    out = Path(out)
    names = study_names(out)
    ledger = Ledger.load(out)
    states = job_states(out, ledger.slots, lock_held_elsewhere(out))
    rows = []
    for name in names:
        study = load(out, name)
        key = study.user_attrs.get("size", {}).get("key", name.removeprefix("lr-"))
        rows.append(summarize(study, reap(out, study, key, ledger.slots, states, log)))
    return rows


def format_status(rows: list[dict]) -> str:
    head = ("size", "N", "tokens", "done", "running", "pending", "pruned", "failed", "best lr", "best loss", "trial")
    extra = sorted({k for r in rows if r["best"] for k in r["best"] if k in ("batch_size", "beta2")})
    head = head[:9] + tuple(f"best {k}" for k in extra) + head[9:]
    table = [head]
    for r in rows:
        c, b, sz = r["counts"], r["best"], r["size"]
        running = f"{c['running']}" + (f" (+{c['resumable']} to resume)" if c["resumable"] else "")
        cells = [sz.get("key", r["study"]), format_count(sz["n_params"]) if sz.get("n_params") else "-",
                 format_count(sz["tokens"]) if sz.get("tokens") else "-", str(c["completed"]), running,
                 str(c["pending"]), str(c["pruned"]), str(c["failed"]), f"{b['lr']:.4g}" if b else "-"]
        cells += [(f"{b[k]:.4g}" if b and k in b else "-") for k in extra]
        cells += [f"{b['loss']:.4f}" if b else "-", str(b["trial"]) if b else "-"]
        table.append(tuple(cells))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                     for row in table)
