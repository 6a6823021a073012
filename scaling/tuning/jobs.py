"""One trial as a submitit job: a TrainJob (sweep/jobs.py: USR2 checkpoint and requeue, a
job record with its step every few seconds) that asks the study for its trial itself.

Asking when the job starts, not when it is submitted, lets TPE see every trial that has
finished by then. The trial number is written to the job record at once and carried by the
fresh copy submitit requeues, so a preempted trial resumes its own run directory and keeps
reporting to the same trial. Each validation point is reported (`trial.report`), and the
pruner's verdict stops the run there (TrainingRun's on_validation): its run.json says
"pruned", which is a finished trial, not a failed one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path

from scaling.base.errors import UserError
from scaling.jobs.job import TrainJob, record_start, update_record
from scaling.tuning.study import TRIALS_DIR, Space, load, sampler


class TrialJob(TrainJob):
    """spec: out, key, study, template (TrainConfig dict), space, pruner, seed, trials,
    record (this slot's job record), trial (a trial to resume, or None: ask a new one)."""

    def __init__(self, spec: dict, number: int | None = None):
        super().__init__(spec["template"], spec["record"])
        self.spec = dict(spec)
        self.number = number if number is not None else spec.get("trial")

    def fresh(self) -> "TrialJob":
        return type(self)(self.spec, self.number)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "spec": self.spec, "number": self.number}

    def _call(self) -> dict:
        from scaling.base.config import TrainConfig
        from scaling.train.run import TrainingRun, _first_line, val_schedule

        spec, rec_path = self.spec, Path(self.spec["record"])
        try:
            prev = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            prev = {}
        if self.number is None:
            self.number = prev.get("trial")  # a requeue of the original pickle (no checkpoint)
        record_start(rec_path)
        # record_start rewrites the record: put a resumed trial's number back at once, or
        # `tune status` would count this start both as a waiting job and as an unclaimed trial.
        update_record(rec_path, pid=os.getpid(), updated_at=time.time(),
                      **({"trial": self.number} if self.number is not None else {}))
        space = Space(**{k: tuple(v) if v is not None else None for k, v in spec["space"].items()})
        out = Path(spec["out"])
        study = load(out, spec["study"], spec["pruner"], sampler(spec["seed"], spec["trials"]))
        trial = self._trial(study, space)
        if trial is None:  # finished meanwhile (told by an earlier start, or failed by a reaper)
            return {"trial": self.number, "state": "finished"}
        self.number = n = trial.number
        update_record(rec_path, trial=n)
        cfg = TrainConfig.from_dict({
            **spec["template"], **Space.values(trial.params), "progress": False,
            "out": str(out / spec["key"] / TRIALS_DIR / str(n)), "extra": {"tune": str(out), "trial": n},
        })
        points = val_schedule(cfg.tokens // cfg.tokens_per_step, cfg.val_points)

        def on_validation(step: int, row: dict) -> bool:
            loss = row.get("val_loss")
            if step == 0 or loss is None or not math.isfinite(loss):
                return False
            trial.report(loss, points.index(step))  # the k-th point: the same token fraction for any batch
            return trial.should_prune()

        self._run = TrainingRun(cfg, on_validation)
        stop = threading.Event()
        threading.Thread(target=self._report, args=(stop,), daemon=True, name="job-report").start()
        try:
            rec = self._run.fit()
        except Exception as e:  # KeyboardInterrupt / SystemExit (preempted): the trial stays RUNNING
            self._tell(study, n, "failed", error=str(e) if isinstance(e, UserError) else _first_line(e))
            raise
        finally:
            stop.set()
        from scaling.base.rundir import RunStatus

        status = RunStatus.of(rec)
        loss = ((rec.get("val") or {}).get("mixed") or {}).get("loss")
        if status.resumable:
            # Stopped by a signal before its budget, with a checkpoint: a rerun resumes it.
            update_record(rec_path, stopped=rec.get("error") or status.value)
            return {"trial": n, "state": "stopped", "error": rec.get("error")}
        if status == RunStatus.COMPLETED and loss is not None and math.isfinite(loss):
            state = self._tell(study, n, "completed", loss=loss)
        elif status in (RunStatus.PRUNED, RunStatus.DIVERGED):
            state = self._tell(study, n, status.value, error=rec.get("error"))
        else:
            state = self._tell(study, n, "failed", error=rec.get("error") or f"run ended {status.value}")
        return {"trial": n, "state": state, "loss": loss, "error": rec.get("error")}

    def _trial(self, study, space: Space):
        from optuna.trial import Trial, TrialState

        if self.number is not None:
            t = study.get_trials(deepcopy=False)[self.number]
            return Trial(study, t._trial_id) if t.state == TrialState.RUNNING else None
        return study.ask(space.distributions())

    @staticmethod
    def _tell(study, n: int, outcome: str, loss: float | None = None, error: str | None = None) -> str:
        """completed -> COMPLETE with its loss; pruned and diverged -> PRUNED (TPE ranks it
        worst, so it learns to stay away); failed -> FAIL, which a rerun replaces."""
        from optuna.trial import TrialState

        t = study.get_trials(deepcopy=False)[n]
        try:
            study._storage.set_trial_user_attr(t._trial_id, "outcome", outcome)
            if error:
                study._storage.set_trial_user_attr(t._trial_id, "error", error)
            if outcome == "completed":
                study.tell(n, loss)
            else:
                study.tell(n, state=TrialState.PRUNED if outcome in ("pruned", "diverged") else TrialState.FAIL)
        except (ValueError, RuntimeError) as e:  # a reaper marked it failed while the job was away
            print(f"trial {n}: could not record {outcome}: {e}", file=sys.stderr)
        return outcome
