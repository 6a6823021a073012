"""`scaling tune`: submit the trials each size still misses, on the sweep executors.

    Tuner(TuneConfig(...), executor="local").run()  ->  tuned.json's record (or None)

Every trial is a TrialJob (jobs.py) submitted through jobs/executors.open_launch, so the
`[executor]` and `[slurm]` settings of a sweep file apply: on Slurm all sizes' trials go
out as one job array with the `parallelism` limit and the command returns (--wait blocks);
local jobs run `parallelism` at a time in the foreground, and debug ones in-process.

Rerunning continues every study: dead trials are marked failed first (status.py), trials
stopped cleanly by a signal are resubmitted with their number and resume from their
checkpoint, and only the missing ones are added. `trials` counts completed, pruned and
in-flight trials; failed ones do not count, so a rerun replaces them.

Three parts, in the order a run takes them: `Tuner` is the command (the lock, the
bookkeeping of what each size misses, the results); `_Launch` submits (one launch folder,
one slot and one TrialJob per trial); `_foreground` waits for local and debug jobs, and
`_ended` reads what each one left.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
import time
from pathlib import Path

from scaling.base.errors import UserError
from scaling.data.shards import TokenShards, resolve_data
from scaling.jobs.executors import (
    ExecutorSettings,
    Resources,
    SlurmSettings,
    check_executor,
    open_launch,
    require_sbatch,
)
from scaling.jobs.job import update_record
from scaling.jobs.ledger import Job
from scaling.jobs.states import error_line
from scaling.train.schedule import make_plan
from scaling.tuning import rules
from scaling.tuning.jobs import TrialJob
from scaling.tuning.status import Ledger, Slot, job_states, reap
from scaling.tuning.study import LOCK, SizeStudy, Space, TuneConfig, fail_trial, open_or_create


class Tuner:
    """One `scaling tune` on one study directory. After run(): `in_flight` (Slurm jobs left
    running, without --wait), `submitted` (their slots), `stopped` (a trial stopped before its
    budget: rerun to resume), `errors` (trials whose jobs failed)."""

    def __init__(self, cfg: TuneConfig, executor: str = "local", resources: Resources | None = None,
                 slurm: SlurmSettings | None = None, wait: bool = False, log=None, poll_s: float = 1.0):
        self.kind = check_executor(executor)
        self.cfg = cfg.check()   # the sizes and the search space together (TuneConfig.check)
        self.exe = ExecutorSettings(resources or Resources(), slurm or SlurmSettings())
        self.wait = wait
        self.out = Path(cfg.out)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.poll_s = poll_s
        self.stopped = False      # a trial stopped before its budget: rerun to resume
        self.submitted: list[Slot] = []
        self.in_flight = False    # slurm without --wait: trials submitted now or still out there
        self.errors: list[str] = []

    def run(self) -> dict | None:
        require_sbatch(self.kind)  # before any file is written
        rules = {s.key: _rule(s) for s in self.cfg.sizes}
        self.out.mkdir(parents=True, exist_ok=True)
        with _locked(self.out):
            studies = {s.key: open_or_create(self.cfg, s, rules[s.key]) for s in self.cfg.sizes}
            ledger = Ledger.load(self.out)
            order, out_there = _missing(self.out, self.cfg, ledger, studies, self.log)
            if not order:
                self.log(f"{self.out}: every study has its {self.cfg.trials} trial(s): nothing to do")
            else:
                launch = _Launch(self, ledger, len(order))
                if self.kind == "slurm":
                    self.submitted = launch.array(order)
                    if self.wait:
                        self._wait_slurm(ledger)
                else:
                    _foreground(self, launch, order, studies)
            # A Slurm rerun once every trial has ended writes best.json and tuned.json, as the
            # command's output promises; while jobs are out there it only reports.
            self.in_flight = self.kind == "slurm" and not self.wait and (bool(order) or out_there)
            if self.in_flight:
                return None
            return self._finish()

    def _wait_slurm(self, ledger: Ledger) -> None:
        while True:
            st = job_states(self.out, ledger.slots, command_running=False)
            if not any(s.alive for s in st.values()):
                return
            time.sleep(max(self.poll_s, 2.0))

    def _finish(self) -> dict | None:
        doc = rules.write(self.out)
        self.sizes = doc["sizes"]
        return doc if any(s["best"] for s in doc["sizes"]) else None


def _rule(s: SizeStudy) -> dict:
    """The rule-of-N lr for this size on this data; also fails fast on a bad corpus or a
    budget smaller than one batch, before anything is submitted."""
    from dataclasses import replace

    shards = TokenShards.open(resolve_data(s.template.data), "train")
    plan = make_plan(replace(s.template, lr=None), shards.vocab_size)
    return {"lr": plan.lr, "n_params_nonembed": plan.model.n_params(embeddings=False)}


def _missing(out: Path, cfg: TuneConfig, ledger: Ledger, studies: dict, log) -> tuple[list[tuple[str, int | None]], bool]:
    """The bookkeeping: reap dead trials, count what each size has, and order what it
    misses as (size, trial to resume or None); and whether jobs of earlier runs are still
    out there (running, or waiting to start)."""
    states = job_states(out, ledger.slots, command_running=False)
    todo: dict[str, list[int | None]] = {}
    out_there = False
    for s in cfg.sizes:
        st = studies[s.key]
        flight = reap(out, st, s.key, ledger.slots, states, log)
        counted = sum(t.state.name in ("COMPLETE", "PRUNED") for t in st.get_trials(deepcopy=False))
        counted += len(flight["running"]) + len(flight["resumable"]) + len(flight["pending"])
        todo[s.key] = list(flight["resumable"]) + [None] * max(0, cfg.trials - counted)
        if flight["resumable"]:
            log(f"{s.key}: resuming stopped trial(s) {', '.join(map(str, flight['resumable']))}")
        if flight["running"] or flight["pending"]:
            out_there = True
            log(f"{s.key}: {len(flight['running'])} trial(s) running, {len(flight['pending'])} job(s) "
                f"waiting: not submitted again")
    # Round-robin over sizes: every study advances, and asks late enough to learn.
    order = [(k, n) for i in range(max(map(len, todo.values()), default=0))
             for k, lst in todo.items() if i < len(lst) for n in [lst[i]]]
    return order, out_there


@contextlib.contextmanager
def _locked(out: Path):
    """Hold OUT's lock: one `scaling tune` per study directory (status.lock_held_elsewhere)."""
    lock = open(out / LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise UserError(f"{out}: another `scaling tune` is running on this directory") from None
    try:
        yield
    finally:
        lock.close()


class _Launch:
    """The submission: one launch folder and executor for this command's jobs; each trial gets
    a slot in the ledger (its job record, its job) and a TrialJob."""

    def __init__(self, tuner: Tuner, ledger: Ledger, jobs: int):
        self.tuner, self.ledger, self.out, self.cfg = tuner, ledger, tuner.out, tuner.cfg
        self.sizes = {s.key: s for s in self.cfg.sizes}
        self.launch = open_launch(tuner.kind, self.out, tuner.exe, f"tune-{self.out.name}")
        self.ledger.launches.append({"id": self.launch.folder.name, "executor": tuner.kind, "jobs": jobs, "at": time.time()})
        for key in self.sizes:
            (self.out / key / "jobs").mkdir(parents=True, exist_ok=True)

    def slot(self, key: str, trial: int | None) -> Slot:
        """A new slot of size `key` in the ledger (its job id comes once submitted)."""
        lch = self.launch
        slot = Slot(key, self.ledger.next_k(key), Job(lch.kind, "-", lch.folder.name, lch.job_name, time.time()), trial)
        self.ledger.slots.append(slot)
        return slot

    def job(self, slot: Slot):
        """The TrialJob of a slot."""
        s, out, cfg = self.sizes[slot.key], self.out, self.cfg
        t = s.template.to_dict()
        t["data"] = str(Path(t["data"]).resolve()) if t.get("data") else None  # jobs may start elsewhere
        return TrialJob({
            "out": str(out.resolve()), "key": s.key, "study": s.name, "template": t,
            "space": cfg.space.to_dict(), "pruner": cfg.pruner,
            # one seed per slot: parallel jobs that ask at once must not draw the same point
            "seed": cfg.seed + slot.k + 7919 * [z.key for z in cfg.sizes].index(s.key),
            "trials": cfg.trials, "record": str(slot.record_path(out).resolve()), "trial": slot.trial})

    def submit(self, slot: Slot):
        job = self.launch.executor.submit(self.job(slot))
        if self.launch.kind == "local":
            slot.job.job_id = str(job.job_id)
        self.ledger.save()
        return job

    def array(self, order: list) -> list[Slot]:
        """Slurm: every trial of `order` in one job array."""
        slots = [self.slot(k, n) for k, n in order]
        ex = self.launch.executor
        with ex.batch():
            jobs = [ex.submit(self.job(s)) for s in slots]
        for s, j in zip(slots, jobs):
            s.job.job_id = str(j.job_id)
        self.ledger.save()
        self.tuner.log(f"{self.out}: {len(slots)} trial job(s) submitted as job array {str(jobs[0].job_id).split('_')[0]}")
        return slots


def _foreground(tuner: Tuner, launch: _Launch, order: list, studies: dict) -> None:
    """Local and debug: run the trials `parallelism` at a time (debug: one, in-process) until
    every one has ended, or a trial stopped before its budget (then no new one starts)."""
    n = 1 if tuner.kind == "debug" else tuner.exe.resources.concurrent()
    queue, running = list(order), []
    done = 0
    try:
        while (queue and not tuner.stopped) or running:
            while queue and len(running) < n and not tuner.stopped:
                slot = launch.slot(*queue.pop(0))
                running.append((slot, launch.submit(slot)))
            if tuner.kind == "debug":
                finished = [running.pop(0)]
            else:
                time.sleep(tuner.poll_s)
                finished = [(s, j) for s, j in running if j.done()]
                running = [(s, j) for s, j in running if (s, j) not in finished]
            for slot, job in finished:
                done += 1
                _ended(tuner, slot, job, studies[slot.key], f"{done}/{len(order)}")
    finally:
        for slot, job in running:  # Ctrl-C: stop what we started; a rerun resumes it
            job.cancel(check=False)
            update_record(slot.record_path(tuner.out), stopped="cancelled by the tune command")


def _outcome(kind: str, job) -> tuple[dict | None, str | None]:
    """(result, error) of a local or debug job that ended."""
    if kind == "debug":
        e = job.exception()  # not result(): a debug job's result() opens pdb post-mortem
        if e is None:
            return job.result(), None
        if isinstance(e, UserError):
            raise UserError(str(e))
        return None, f"{type(e).__name__}: {e}".splitlines()[0]
    try:
        return job.result(), None
    except Exception as e:
        if type(e).__name__ == "UncompletedJobError":  # no result pickle: the process died
            return None, f"job {job.job_id} died without a result (killed, or out of memory)"
        return None, error_line(e)


def _ended(tuner: Tuner, slot: Slot, job, study, progress: str) -> None:
    """A local or debug job ended: log it; a trial its job left RUNNING without stopping
    cleanly (killed, raised before telling) is marked failed now."""
    res, err = _outcome(tuner.kind, job)
    rec = slot.record(tuner.out)
    n = (res or {}).get("trial", rec.get("trial"))
    if res is not None and res.get("state") == "stopped":
        tuner.stopped = True
        tuner.log(f"trial {n} of {slot.key}: stopped ({res.get('error')}); rerun to resume")
        return
    if n is not None and fail_trial(study, n, err or "its job ended without a result"):
        tuner.errors.append(f"{slot.key} trial {n}: {err}")
    if n is None:
        tuner.errors.append(f"{slot.key} slot {slot.k}: {err}")
        tuner.log(f"{slot.key} slot {slot.k}: job failed before asking for a trial: {err}")
        return
    tuner.log(f"{slot.key} trial {n} [{progress}]  {_trial_line(study, n)}")


def _trial_line(study, n: int) -> str:
    """Trial n's values and outcome, and the study's best so far."""
    t = study.get_trials(deepcopy=False)[n]
    vals = Space.values(t.params)
    what = f"loss {t.value:.4f}" if t.value is not None and t.state.name == "COMPLETE" else (
        t.user_attrs.get("outcome") or t.state.name.lower())
    if t.state.name != "COMPLETE" and t.user_attrs.get("error"):
        what += f": {t.user_attrs['error']}"
    try:
        b = study.best_trial
        best = f"best {b.value:.4f} @ lr {b.params['lr']:.3g}"
    except ValueError:
        best = "no completed trial yet"
    params = "  ".join(f"{k} {v:.3g}" for k, v in vals.items())
    return f"{params}  {what}  ({best})"
