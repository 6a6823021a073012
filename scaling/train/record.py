"""run.json, the record of one run: what it is (config, model, plan), where it stands (status,
tokens and FLOPs so far, the final validation score), and its history (one entry per status an
attempt took, with its step, time and job). Written atomically by the main process only: a run
has one record, whatever its world size. scaling/base/rundir.py owns the statuses and files.
"""

from __future__ import annotations

import os
import platform
import traceback
from datetime import datetime, timezone
from pathlib import Path

import lightning
import numpy as np
import torch

from scaling import __version__
from scaling.base.config import TrainConfig
from scaling.base.errors import WriteError, first_line
from scaling.base.rundir import RUN_JSON, RunStatus, atomic_write_json
from scaling.train.schedule import RunPlan



def slurm_job_id() -> str | None:
    """The Slurm job as squeue and sacct name it: `53_1` for task 1 of array 53 (its
    SLURM_JOB_ID is a number of its own), `53` for a job that is no array; None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None

def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    # str(): torch's version is a str subclass, and the record holds plain data only.
    return {
        "scaling": __version__, "torch": str(torch.__version__), "lightning": lightning.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
    }


def fresh(cfg: TrainConfig, plan: RunPlan, shards_dir, prev: dict, set_aside: list[str]) -> dict:
    """The record of a start: what the run is, nothing trained yet, the previous start's history."""
    m = plan.model
    return {
        "name": Path(cfg.out).name, "status": RunStatus.RUNNING.value, "config": cfg.to_dict(),
        "model": m.to_dict(), "model_shape": m.describe(),
        "n_params": m.n_params(), "n_params_nonembed": m.n_params(embeddings=False),
        "tokens_budget": plan.tokens_budget, "tokens_seen": 0, "steps": plan.steps,
        "tokens_per_step": plan.tokens_per_step, "world_size": plan.world,
        "batch_per_rank": plan.batch_size // plan.world, "micro_batch": plan.micro_batch,
        "accumulation": plan.accum, "lr": plan.lr, "flops": 0.0,
        "flops_per_token": plan.flops_per_step / plan.tokens_per_step,
        "flops_6nd_per_token": 6.0 * m.n_params(),
        "data": str(Path(shards_dir).resolve()), "val": None, "wall_time_s": None, "error": None, "device": None,
        "restarts": prev.get("restarts", -1) + 1 if prev else 0,
        "started_at": prev.get("started_at", now()), "finished_at": None,
        "versions": versions(), "host": platform.node(), "slurm_job_id": slurm_job_id(),
        # One entry per status an attempt took (started, then how it ended): a requeued or
        # relaunched run shows each start and stop, with its step, time and job.
        "history": list(prev.get("history") or []),
        "set_aside": list(prev.get("set_aside") or []) + set_aside,
    }


class RunRecord:
    """The run.json of one start of a run: made from the plan and the previous record (a
    resumed run keeps its history), marked as the run goes, written by the main process.

    One piece: every way a start can end (finished, stopped, preempted, failed, a full disk)
    writes the same history the same way, in this one class."""

    def __init__(self, run_dir: Path, data: dict, main: bool):
        self.run_dir, self.data, self.main = Path(run_dir), data, main

    @classmethod
    def start(cls, cfg: TrainConfig, plan: RunPlan, shards_dir, prev: dict | None, set_aside: list[str],
              main: bool) -> "RunRecord":
        record = cls(cfg.out, fresh(cfg, plan, shards_dir, prev or {}, set_aside), main)
        # The step this start resumes from is known once the checkpoint is read (started());
        # a start that fails before that keeps it unknown.
        record.mark(RunStatus.RUNNING, None)
        record.write()   # makes the run directory (rundir.atomic_file)
        return record

    def results(self, plan: RunPlan, step: int, recorder, precision: str, wall_s: float) -> None:
        """What this start trained, from the trainer's RunRecorder."""
        self.data.update(
            tokens_seen=step * plan.tokens_per_step, flops=step * plan.flops_per_step,
            wall_time_s=recorder.elapsed_before + wall_s, device=recorder.device_name, precision=precision,
            last_train_loss=recorder.last_loss, data_digest=f"{recorder.digest() & (2**64 - 1):016x}")
        if recorder.final_val is not None:
            v = recorder.final_val
            self.data["val"] = {
                "mixed": {"loss": v["val_loss"], "bpb": v["val_bpb"], "se": v["val_se"]},
                "denoise": {"loss": v["val_loss_denoise"], "bpb": v["val_bpb_denoise"]},
                "clm": {"loss": v["val_loss_clm"], "bpb": v["val_bpb_clm"]},
            }
            # The tasks' columns at the last point, under their stable names (docs/tasks.md).
            tasks = {k: x for k, x in v.items() if k.startswith("task.")}
            if tasks:
                self.data["tasks"] = tasks

    def mark(self, status: RunStatus, step: int | None) -> None:
        """Add `status` to the history (run.json keeps every attempt's start and end)."""
        history = self.data["history"]
        if status == RunStatus.RUNNING and history and history[-1]["status"] == RunStatus.RUNNING and history[-1]["step"] is None:
            history.pop()   # this start, until now without its step (the checkpoint was unread)
        history.append({"status": status.value, "step": step, "at": now(), "job": slurm_job_id()})

    def write(self) -> None:
        if self.main:
            atomic_write_json(self.run_dir / RUN_JSON, self.data)

    def started(self, step: int) -> None:
        """The checkpoint is read: the history says where this start resumed, at once, so
        that it holds even for a start that is then killed."""
        self.mark(RunStatus.RUNNING, step)
        self.write()

    def ended(self, status: RunStatus, step: int, error: str | None = None) -> None:
        """How this start ended, written. A run that stopped before its end stays resumable."""
        if status != RunStatus.STOPPED:
            self.data["status"] = status.value
        if status.finished:
            self.data["finished_at"] = now()
        if error is not None:
            self.data["error"] = error
        self.mark(status, step)
        self.write()

    def broken_off(self, e: BaseException, step: int | None, requeued: bool) -> None:
        """The run raised `e` at `step`: record why, the way a rerun will read it."""
        if isinstance(e, KeyboardInterrupt):
            self.data["error"] = "interrupted"
            self.mark(RunStatus.STOPPED, step)
            self.write()
        elif isinstance(e, WriteError):
            # The disk is full or the directory read-only: the record cannot say so either.
            # It keeps its last state ("running"), and the last checkpoint is intact (atomic
            # writes), so a rerun once there is room resumes from it.
            pass
        elif isinstance(e, SystemExit) and e.code in (0, None):
            pass
        elif isinstance(e, SystemExit) and requeued:
            # submitit's USR2 path: checkpoint() saved the position, the job was requeued,
            # then sys.exit(-1). Not a failure: a plain relaunch (or the requeued job) resumes.
            self.data["status"] = RunStatus.PREEMPTED.value
            self.data["error"] = f"preempted at step {step}: checkpointed and requeued; a relaunch resumes"
            self.mark(RunStatus.PREEMPTED, step)
            self.write()
        else:
            self.data["status"] = RunStatus.FAILED.value
            self.mark(RunStatus.FAILED, step)
            self.data["error"] = first_line(e)
            self.data["traceback"] = traceback.format_exc(limit=20)
            self.data["finished_at"] = now()
            try:
                self.write()
            except WriteError:
                pass   # no room to record the failure: the original error is the one to raise


def outcome(recorder, step: int, steps: int) -> tuple[RunStatus, str | None]:
    """How a start that returned from training ended, and the error line it leaves."""
    if recorder.diverged:
        return RunStatus.DIVERGED, recorder.diverged
    if recorder.pruned:
        return RunStatus.PRUNED, f"pruned at step {step} of {steps} by its caller (a tuner's pruner)"
    if step >= steps and recorder.final_val is not None:
        return RunStatus.COMPLETED, None
    return RunStatus.STOPPED, f"stopped at step {step} of {steps}; rerun to resume"
