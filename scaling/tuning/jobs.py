"""One trial as a submitit job: a TrainJob (jobs/job.py: USR2 checkpoint and requeue, a job
record with its step every few seconds) that asks the study for its trial itself.

Asking when the job starts, not when it is submitted, lets TPE see every trial that has
finished by then. The trial number is written to the job record at once and carried by the
fresh copy submitit requeues, so a preempted trial resumes its own run directory and keeps
reporting to the same trial. Each validation point is reported (`trial.report`), and the
pruner's verdict stops the run there (TrainingRun's on_validation): its run.json says
"pruned", which is a finished trial, not a failed one. What a trial adds to a TrainJob is
only this: the asking, the reporting and the telling; the run's lifecycle is TrainJob's.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError, first_line
from scaling.base.rundir import RunStatus
from scaling.jobs.job import TrainJob, training_run, update_record
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
        spec, rec_path = self.spec, Path(self.spec["record"])
        if self.number is None:
            self.number = _read(rec_path).get("trial")  # a requeue of the original pickle (no checkpoint)
        # A resumed trial's number goes back in the record at once, or `tune status` would
        # count this start both as a waiting job and as an unclaimed trial.
        self._start_record(pid=os.getpid(), updated_at=time.time(),
                           **({"trial": self.number} if self.number is not None else {}))
        space = Space(**{k: tuple(v) if v is not None else None for k, v in spec["space"].items()})
        study = load(Path(spec["out"]), spec["study"], spec["pruner"], sampler(spec["seed"], spec["trials"]))
        trial = _ask(study, self.number, space)
        if trial is None:  # finished meanwhile (told by an earlier start, or failed by a reaper)
            return {"trial": self.number, "state": "finished"}
        self.number = n = trial.number
        update_record(rec_path, trial=n)
        try:   # a config the trial's values make invalid is the trial's failure, told to the study
            cfg = self._config(trial)
            rec = self._fit(training_run(cfg, _pruning(trial, cfg)))
        except Exception as e:  # KeyboardInterrupt / SystemExit (preempted): the trial stays RUNNING
            _tell(study, n, "failed", error=str(e) if isinstance(e, UserError) else first_line(e))
            raise
        return self._told(study, n, rec)

    def _config(self, trial):
        """The trial's run: the template with the trial's values, in OUT/<size>/trials/<n>/."""
        spec, out = self.spec, Path(self.spec["out"])
        return TrainConfig.from_dict({
            **spec["template"], **Space.values(trial.params), "progress": False,
            "out": str(out / spec["key"] / TRIALS_DIR / str(trial.number)),
            "extra": {"tune": str(out), "trial": trial.number},
        })

    def _told(self, study, n: int, rec: dict) -> dict:
        """Tell the study how the run ended, or leave a run stopped by a signal to resume."""
        status = RunStatus.of(rec)
        loss = ((rec.get("val") or {}).get("mixed") or {}).get("loss")
        if status.resumable:
            # Stopped by a signal before its budget, with a checkpoint: a rerun resumes it.
            update_record(Path(self.spec["record"]), stopped=rec.get("error") or status.value)
            return {"trial": n, "state": "stopped", "error": rec.get("error")}
        if status == RunStatus.COMPLETED and loss is not None and math.isfinite(loss):
            state = _tell(study, n, "completed", loss=loss)
        elif status in (RunStatus.PRUNED, RunStatus.DIVERGED):
            state = _tell(study, n, status.value, error=rec.get("error"))
        else:
            state = _tell(study, n, "failed", error=rec.get("error") or f"run ended {status.value}")
        return {"trial": n, "state": state, "loss": loss, "error": rec.get("error")}


def _ask(study, number: int | None, space: Space):
    """The trial to run: trial `number` while the study still has it RUNNING (None when it
    has finished meanwhile), or a new one asked of the study."""
    from optuna.trial import Trial, TrialState

    if number is not None:
        t = study.get_trials(deepcopy=False)[number]
        return Trial(study, t._trial_id) if t.state == TrialState.RUNNING else None
    return study.ask(space.distributions())


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


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _pruning(trial, cfg):
    """TrainingRun's on_validation: report each validation loss to the trial, as the k-th
    point (the same token fraction for any batch), and stop the run where the pruner says."""
    # Here, not above: scaling.train.schedule loads numpy, whose threads must start after the
    # job has blocked USR2 (scaling/base/signals.py); this module is unpickled before that.
    from scaling.train.schedule import val_schedule

    points = val_schedule(cfg.tokens // cfg.tokens_per_step, cfg.val_points)

    def on_validation(step: int, row: dict) -> bool:
        loss = row.get("val_loss")
        if step == 0 or loss is None or not math.isfinite(loss):
            return False
        trial.report(loss, points.index(step))
        return trial.should_prune()

    return on_validation
