"""One training run, end to end, with Lightning.

    TrainingRun(cfg).fit()  ->  the run.json record

What a run guarantees (see scaling/base/rundir.py for the files):
* the learning-rate schedule (warmup, then cosine to 10% of peak) ends exactly at the run's
  own token budget, as Chinchilla requires (schedule.py);
* example i of the run is a pure function of (seed, i) and the data position is part of the
  checkpoint, so a killed run resumes where it stopped and sees exactly the tokens it had
  not seen yet (stream.py, digest.py); a completed run is never retrained;
* a NaN/inf loss stops the run with status "diverged"; an exception marks it "failed" with
  the error's first line; run.json and metrics.parquet are written atomically (record.py).

The lifecycle, in `_fit`: read the run directory (resume.py), plan, either supervise worker
processes (distributed.py) or train this process's rank, and record how the start ended.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from scaling.base.config import TrainConfig
from scaling.base.rundir import CKPT_DIR, CKPT_INFO, LAST_CKPT, RunStatus, write_metrics
from scaling.base.signals import checkpoint_signal_held
from scaling.data.shards import TokenShards, resolve_data
from scaling.train import distributed
from scaling.train.callbacks.checkpointing import Checkpointing
from scaling.train.callbacks.logger import MetricsLogging
from scaling.train.callbacks.progress import Progress
from scaling.train.callbacks.recorder import RunRecorder
from scaling.train.keep import keep_model
from scaling.train.module import EncoderDecoderModule
from scaling.train.record import RunRecord, outcome
from scaling.train.resume import RunDirectory
from scaling.train.schedule import RunPlan, make_plan
from scaling.train.stream import BatchStream, objective_config
from scaling.train.trainer import build_trainer, loader, own_stop_signals


class TrainingRun:
    """One run directory, trained to its budget. `fit()` is safe to call again: it resumes
    from checkpoints/last.ckpt, and returns a completed run's record without retraining.

    One piece: the lifecycle (`_fit`, one screen), the training of one process (`_train`) and
    the two calls submitit makes while it runs (save_checkpoint, start_step)."""

    def __init__(self, cfg: TrainConfig, on_validation=None):
        self.cfg = cfg
        # on_validation(step, val_row) -> True stops the run there as "pruned" (a tuner's
        # pruner). Single-process runs only: ranks would not agree on the verdict.
        self.on_validation = on_validation
        self.run_dir = Path(cfg.out)
        self.module = self.trainer = self.recorder = self.record = None
        self.checkpointed_for_requeue = False   # set by save_checkpoint (submitit's USR2 path)
        self.process = distributed.Process(0, 1, 0, 0, "single")   # set by fit()

    def fit(self) -> dict:
        with checkpoint_signal_held():
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.cfg
        directory = RunDirectory(self.run_dir, cfg)
        prev = directory.matching_record()
        if prev is not None and RunStatus.of(prev).finished:
            return prev   # completed, diverged or pruned: never trained again
        cfg.check_logger_installed()   # before the run directory is written
        self.process = proc = distributed.current()
        distributed.check_world(proc, cfg.devices * cfg.num_nodes)
        shards_dir = resolve_data(cfg.data)
        shards = TokenShards.open(shards_dir, "train")
        plan = make_plan(cfg, shards.vocab_size)
        if plan.world > 1 and proc.source == "single":
            # Nobody started the other processes (a plain `scaling train --devices 2`, a
            # notebook, tune, the demo): this process supervises `world` workers.
            return distributed.supervise(cfg.to_dict(), plan.world, self.run_dir)
        objective = objective_config(cfg, shards, shards_dir)
        resume_from = directory.start_checkpoint(proc.is_main)   # its own, or its trunk's (a branch)
        self.record = RunRecord.start(cfg, plan, shards_dir, prev, directory.set_aside, proc.is_main)
        try:
            self._train(plan, shards_dir, objective, resume_from)
        except BaseException as e:
            self.record.broken_off(e, getattr(self.trainer, "global_step", None), self.checkpointed_for_requeue)
            raise
        return self.record.data

    def _train(self, plan: RunPlan, shards_dir, objective, resume_from) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.shards_dir, self.objective = shards_dir, objective   # what a kept model records
        self.module = EncoderDecoderModule(cfg, plan, pad_id=objective.pad_id)
        stream = BatchStream(str(shards_dir), objective, cfg.seed, plan)
        self.recorder = RunRecorder(cfg, plan, stream, str(shards_dir), objective,
                                    on_validation=self.on_validation, on_start=self.record.started)
        self.checkpointing = Checkpointing(cfg, plan, self.run_dir / CKPT_DIR / LAST_CKPT)
        # In this order at every micro-batch's end: record (and validate), then checkpoint and
        # let a pending USR2 in, then draw.
        callbacks = [self.recorder, MetricsLogging(self.recorder, cfg.to_dict()), self.checkpointing,
                     Progress(plan, self.recorder, cfg.progress)]
        self.trainer, accel, precision = build_trainer(cfg, plan, self.process, callbacks, self.run_dir)
        self.record.data["threads"] = torch.get_num_threads()
        t0 = time.monotonic()
        with own_stop_signals():
            self.trainer.fit(self.module, train_dataloaders=loader(stream, accel),
                             ckpt_path=str(resume_from) if resume_from else None)
        self._conclude(plan, precision, time.monotonic() - t0)

    def _conclude(self, plan: RunPlan, precision: str, wall_s: float) -> None:
        """What the run did, its metrics file, and how this start ended."""
        step, main = self.trainer.global_step, self.trainer.global_rank == 0
        self.record.main = main
        self.record.results(plan, step, self.recorder, precision, wall_s)
        status, error = outcome(self.recorder, step, plan.steps)
        if status == RunStatus.STOPPED:
            # Stopped early (a signal): the checkpoint first, since under Slurm the kill
            # follows `scancel`'s SIGTERM after KillWait seconds; a rerun resumes from here.
            self.checkpointing.save_last(self.trainer)
        if main:
            write_metrics(self.run_dir, self.recorder.rows)
        if status == RunStatus.COMPLETED and main:
            if self.cfg.keep_weights:   # before the checkpoint goes: a failed write leaves it to resume
                keep_model(self.run_dir, self.module.model, self.objective, self.shards_dir, self.record.data)
            for name in (LAST_CKPT, CKPT_INFO):   # the fit needs no optimizer state
                (self.run_dir / CKPT_DIR / name).unlink(missing_ok=True)
        self.record.ended(status, step, error)

    def save_checkpoint(self) -> None:
        """For submitit's checkpoint(): save the exact position now (main thread)."""
        if self.trainer is not None and self.trainer.state.fn is not None:
            self.checkpointing.save_last(self.trainer)
            self.checkpointed_for_requeue = True

    @property
    def start_step(self) -> int:
        """The step this start resumed from (0 for a fresh run)."""
        return self.recorder.start_step if self.recorder is not None else 0


def train_run(cfg: TrainConfig) -> dict:
    return TrainingRun(cfg).fit()
