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

import contextlib
import time
from pathlib import Path

import torch

from scaling.base.config import TrainConfig
from scaling.base.rundir import CKPT_DIR, CKPT_INFO, LAST_CKPT, RunStatus, write_metrics
from scaling.base.signals import checkpoint_signal_held
from scaling.data.builtin_tasks import encode_tasks
from scaling.data.shards import TokenShards, resolve_data
from scaling.train import distributed, sharding
from scaling.train.callbacks.checkpointing import Checkpointing, remove_checkpoint
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
        tasks = encode_tasks(cfg.eval, shards_dir, cfg.seq_len)   # a bad task is refused before anything is written
        if plan.world > 1 and proc.source == "single":
            # Nobody started the other processes (a plain `scaling train --devices 2`, a
            # notebook, tune, the demo): this process supervises `world` workers.
            return distributed.supervise(cfg.to_dict(), plan.world, self.run_dir)
        objective = objective_config(cfg, shards, shards_dir)
        resume_from = directory.start_checkpoint(proc.is_main)   # its own, or its trunk's (a branch)
        self.record = RunRecord.start(cfg, plan, shards_dir, prev, directory.set_aside, proc.is_main)
        try:
            self._train(plan, shards_dir, objective, resume_from, tasks)
        except BaseException as e:
            self.record.broken_off(e, getattr(self.trainer, "global_step", None), self.checkpointed_for_requeue)
            raise
        return self.record.data

    def _train(self, plan: RunPlan, shards_dir, objective, resume_from, tasks=()) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.shards_dir, self.objective = shards_dir, objective   # what a kept model records
        self.module = EncoderDecoderModule(cfg, plan, pad_id=objective.pad_id)
        stream = BatchStream(str(shards_dir), objective, cfg.seed, plan)
        self.recorder = RunRecorder(cfg, plan, stream, str(shards_dir), objective,
                                    on_validation=self.on_validation, on_start=self.record.started, tasks=tasks)
        self.checkpointing = Checkpointing(cfg, plan, self.run_dir / CKPT_DIR / LAST_CKPT)
        # In this order at every micro-batch's end: record (and validate), then checkpoint and
        # let a pending USR2 in, then draw.
        callbacks = [self.recorder, MetricsLogging(self.recorder, cfg.to_dict()), self.checkpointing,
                     Progress(plan, self.recorder, cfg.progress)]
        self.trainer, accel, precision = build_trainer(cfg, plan, self.process, callbacks, self.run_dir)
        self.record.data["threads"] = torch.get_num_threads()
        t0 = time.monotonic()
        with own_stop_signals(), sharded_group(cfg, self.process):
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
        keep = status == RunStatus.COMPLETED and self.cfg.keep_weights
        # A sharded model's weights are gathered by every rank together, for rank 0 to write.
        weights = sharding.full_weights(self.module.model) if keep and sharding.is_sharded(self.module.model) else None
        if status == RunStatus.COMPLETED and main:
            if keep:   # before the checkpoint goes: a failed write leaves it to resume
                keep_model(self.run_dir, self.module.model, self.objective, self.shards_dir, self.record.data, weights)
            for name in (LAST_CKPT, CKPT_INFO):   # the fit needs no optimizer state
                remove_checkpoint(self.run_dir / CKPT_DIR / name)
        self.record.ended(status, step, error)

    def save_checkpoint(self) -> None:
        """For submitit's checkpoint(): save the exact position now (main thread)."""
        if self.trainer is None or self.trainer.state.fn is None:
            return
        if self.checkpointing.sharded:
            # Rank 0 alone cannot save a sharded run (every rank writes its shards): the ranks
            # saved together at this step if any of them held the signal (checkpointing.agree),
            # else the requeued run resumes from the last checkpoint, as exactly.
            self.checkpointed_for_requeue = self.checkpointing.saved_step == self.trainer.global_step
            return
        self.checkpointing.save_last(self.trainer)
        self.checkpointed_for_requeue = True

    @property
    def start_step(self) -> int:
        """The step this start resumed from (0 for a fresh run)."""
        return self.recorder.start_step if self.recorder is not None else 0


@contextlib.contextmanager
def sharded_group(cfg: TrainConfig, proc: distributed.Process):
    """A sharded run of one process in this process (a notebook, a test, a 1-task job) starts
    a process group of one (ModelParallelStrategy needs one); it is ended with the run, so
    the caller's process is left as it was. Workers and tasks exit with theirs."""
    try:
        yield
    finally:
        if cfg.strategy == "fsdp" and proc.source == "single" and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def train_run(cfg: TrainConfig) -> dict:
    return TrainingRun(cfg).fit()
