"""`scaling tune`: submit the trials each size still misses, on the sweep executors.

    Tuner(TuneConfig(...), executor="local").run()  ->  tuned.json's record (or None)

Every trial is a TrialJob (jobs.py) submitted with sweep/launch.make_executor, so the
`[executor]` and `[slurm]` settings of a sweep file apply: on Slurm all sizes' trials go
out as one job array with the `parallelism` limit and the command returns (--wait blocks);
local jobs run `parallelism` at a time in the foreground, and debug ones in-process.

Rerunning continues every study: dead trials are marked failed first (status.py), trials
stopped cleanly by a signal are resubmitted with their number and resume from their
checkpoint, and only the missing ones are added. `trials` counts completed, pruned and
in-flight trials; failed ones do not count, so a rerun replaces them.
"""

from __future__ import annotations

import fcntl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scaling.base.errors import UserError
from scaling.jobs.ledger import Job
from scaling.sweep.spec import EXECUTORS, Resources, SlurmSettings
from scaling.tuning.status import Ledger, Slot, job_states, reap
from scaling.tuning.study import LOCK, SizeStudy, TuneConfig, open_or_create

LAUNCHES = "launches"


@dataclass(frozen=True)
class Executing:
    """What make_executor reads of a sweep: its [executor] and [slurm] settings."""

    resources: Resources
    slurm: SlurmSettings


class Tuner:
    def __init__(self, cfg: TuneConfig, executor: str = "local", resources: Resources | None = None,
                 slurm: SlurmSettings | None = None, wait: bool = False, log=None, poll_s: float = 1.0):
        if executor not in EXECUTORS:
            raise UserError(f"--executor {executor!r}: must be one of {', '.join(EXECUTORS)}")
        self.cfg = cfg.check()   # the sizes and the search space together (TuneConfig.check)
        self.kind = executor
        self.exe = Executing(resources or Resources(), slurm or SlurmSettings())
        self.wait = wait
        self.out = Path(cfg.out)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.poll_s = poll_s
        self.stopped = False      # a trial stopped before its budget: rerun to resume
        self.submitted: list[Slot] = []
        self.in_flight = False    # slurm without --wait: trials submitted now or still out there
        self.errors: list[str] = []

    # ------------------------------------------------------------ set-up
    def _rule(self, s: SizeStudy) -> dict:
        """The rule-of-N lr for this size on this data; also fails fast on a bad corpus or a
        budget smaller than one batch, before anything is submitted."""
        from dataclasses import replace

        from scaling.data.shards import TokenShards
        from scaling.train.run import make_plan, resolve_data

        shards = TokenShards.open(resolve_data(s.template.data), "train")
        plan = make_plan(replace(s.template, lr=None), shards.vocab_size)
        return {"lr": plan.lr, "n_params_nonembed": plan.model.n_params(embeddings=False)}

    def run(self) -> dict | None:
        if self.kind == "slurm":
            import shutil

            if shutil.which("sbatch") is None:  # before any file is written
                raise UserError("--executor slurm: sbatch not found; is this a Slurm login node? "
                                "(slurm/start.sh starts a local cluster)")
        rules = {s.key: self._rule(s) for s in self.cfg.sizes}
        self.out.mkdir(parents=True, exist_ok=True)
        lock = open(self.out / LOCK, "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise UserError(f"{self.out}: another `scaling tune` is running on this directory") from None
        try:
            studies = {s.key: open_or_create(self.cfg, s, rules[s.key]) for s in self.cfg.sizes}
            ledger = Ledger.load(self.out)
            states = job_states(self.out, ledger.slots, command_running=False)
            todo: dict[str, list[int | None]] = {}
            out_there = False
            for s in self.cfg.sizes:
                st = studies[s.key]
                flight = reap(self.out, st, s.key, ledger.slots, states, self.log)
                counted = sum(t.state.name in ("COMPLETE", "PRUNED") for t in st.get_trials(deepcopy=False))
                counted += len(flight["running"]) + len(flight["resumable"]) + len(flight["pending"])
                todo[s.key] = list(flight["resumable"]) + [None] * max(0, self.cfg.trials - counted)
                if flight["resumable"]:
                    self.log(f"{s.key}: resuming stopped trial(s) {', '.join(map(str, flight['resumable']))}")
                if flight["running"] or flight["pending"]:
                    out_there = True
                    self.log(f"{s.key}: {len(flight['running'])} trial(s) running, {len(flight['pending'])} job(s) "
                             f"waiting: not submitted again")
            # Round-robin over sizes: every study advances, and asks late enough to learn.
            order = [(k, n) for i in range(max(map(len, todo.values()), default=0))
                     for k, lst in todo.items() if i < len(lst) for n in [lst[i]]]
            if not order:
                self.log(f"{self.out}: every study has its {self.cfg.trials} trial(s): nothing to do")
            else:
                self._submit(ledger, order, studies)
            # A Slurm rerun once every trial has ended writes best.json and tuned.json, as the
            # command's output promises; while jobs are out there it only reports.
            self.in_flight = self.kind == "slurm" and not self.wait and (bool(order) or out_there)
            if self.in_flight:
                return None
            return self._finish()
        finally:
            lock.close()

    # -------------------------------------------------------------- jobs
    def _spec(self, s: SizeStudy, slot: Slot) -> dict:
        t = s.template.to_dict()
        t["data"] = str(Path(t["data"]).resolve()) if t.get("data") else None  # jobs may start elsewhere
        return {"out": str(self.out.resolve()), "key": s.key, "study": s.name, "template": t,
                "space": self.cfg.space.to_dict(), "pruner": self.cfg.pruner,
                # one seed per slot: parallel jobs that ask at once must not draw the same point
                "seed": self.cfg.seed + slot.k + 7919 * [z.key for z in self.cfg.sizes].index(s.key),
                "trials": self.cfg.trials, "record": str(slot.record_path(self.out).resolve()), "trial": slot.trial}

    def _submit(self, ledger: Ledger, order: list, studies: dict) -> None:
        from scaling.sweep.launch import make_executor
        from scaling.tuning.jobs import TrialJob

        sizes = {s.key: s for s in self.cfg.sizes}
        folder = _launch_folder(self.out, self.kind)
        job_name = f"tune-{self.out.name}-{folder.name}"
        ex = make_executor(self.kind, folder, self.exe, job_name)
        ledger.launches.append({"id": folder.name, "executor": self.kind, "jobs": len(order), "at": time.time()})
        for key in sizes:
            (self.out / key / "jobs").mkdir(parents=True, exist_ok=True)

        def slot_for(key: str, trial: int | None) -> Slot:
            slot = Slot(key, ledger.next_k(key), Job(self.kind, "-", folder.name, job_name, time.time()), trial)
            ledger.slots.append(slot)
            return slot

        if self.kind == "slurm":
            slots = [slot_for(k, n) for k, n in order]
            with ex.batch():
                jobs = [ex.submit(TrialJob(self._spec(sizes[s.key], s))) for s in slots]
            for s, j in zip(slots, jobs):
                s.job.job_id = str(j.job_id)
            ledger.save()
            self.submitted = slots
            self.log(f"{self.out}: {len(slots)} trial job(s) submitted as job array {str(jobs[0].job_id).split('_')[0]}")
            if self.wait:
                self._wait_slurm(ledger)
            return

        n = 1 if self.kind == "debug" else self.exe.resources.concurrent()
        queue, running = list(order), []
        done = 0
        try:
            while (queue and not self.stopped) or running:
                while queue and len(running) < n and not self.stopped:
                    key, trial = queue.pop(0)
                    slot = slot_for(key, trial)
                    job = ex.submit(TrialJob(self._spec(sizes[key], slot)))
                    if self.kind == "local":
                        slot.job.job_id = str(job.job_id)
                    ledger.save()
                    running.append((slot, job))
                if self.kind == "debug":
                    finished = [running.pop(0)]
                else:
                    time.sleep(self.poll_s)
                    finished = [(s, j) for s, j in running if j.done()]
                    running = [(s, j) for s, j in running if (s, j) not in finished]
                for slot, job in finished:
                    done += 1
                    self._finished(slot, job, studies[slot.key], f"{done}/{len(order)}")
        finally:
            for slot, job in running:  # Ctrl-C: stop what we started; a rerun resumes it
                from scaling.jobs.job import update_record

                job.cancel(check=False)
                update_record(slot.record_path(self.out), stopped="cancelled by the tune command")

    def _finished(self, slot: Slot, job, study, progress: str) -> None:
        """A local or debug job ended: log it; a trial its job left RUNNING without stopping
        cleanly (killed, raised before telling) is marked failed now."""
        from scaling.sweep.status import exception_line
        from scaling.tuning.study import Space, fail_trial

        res, err = None, None
        if self.kind == "debug":
            e = job.exception()  # not result(): a debug job's result() opens pdb post-mortem
            if e is not None:
                err = f"{type(e).__name__}: {e}".splitlines()[0]
                if isinstance(e, UserError):
                    raise UserError(str(e))
            else:
                res = job.result()
        else:
            try:
                res = job.result()
            except Exception as e:
                err = exception_line(str(e)) or f"{type(e).__name__}: {e}".splitlines()[0]
                if type(e).__name__ == "UncompletedJobError":  # no result pickle: the process died
                    err = f"job {job.job_id} died without a result (killed, or out of memory)"
        rec = slot.record(self.out)
        n = (res or {}).get("trial", rec.get("trial"))
        if res is not None and res.get("state") == "stopped":
            self.stopped = True
            self.log(f"trial {n} of {slot.key}: stopped ({res.get('error')}); rerun to resume")
            return
        if n is not None and fail_trial(study, n, err or "its job ended without a result"):
            self.errors.append(f"{slot.key} trial {n}: {err}")
        if n is None:
            self.errors.append(f"{slot.key} slot {slot.k}: {err}")
            self.log(f"{slot.key} slot {slot.k}: job failed before asking for a trial: {err}")
            return
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
        self.log(f"{slot.key} trial {n} [{progress}]  {params}  {what}  ({best})")

    def _wait_slurm(self, ledger: Ledger) -> None:
        from scaling.tuning.status import job_states as states_of

        while True:
            st = states_of(self.out, ledger.slots, command_running=False)
            if not any(s.alive for s in st.values()):
                return
            time.sleep(max(self.poll_s, 2.0))

    # ----------------------------------------------------------- results
    def _finish(self) -> dict | None:
        from scaling.tuning import rules

        doc = rules.write(self.out)
        self.sizes = doc["sizes"]
        return doc if any(s["best"] for s in doc["sizes"]) else None


def _launch_folder(out: Path, kind: str) -> Path:
    """A fresh submitit folder per launch: Slurm job ids restart at 1 when a cluster's state
    is wiped, and an old folder would hand back an old job's result for a new id."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        p = out / LAUNCHES / (f"{stamp}-{kind}" + (f"-{i}" if i else ""))
        if not p.exists():
            p.mkdir(parents=True)
            return p
    raise UserError(f"{out / LAUNCHES}: cannot create a fresh launch folder")
