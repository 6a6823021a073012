"""checkpoints/last.ckpt of a run: saved every few seconds, on a stop signal and on submitit's
USR2, always at a step boundary and atomically.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import torch

from scaling.base.config import TrainConfig
from scaling.base.rundir import atomic_file, branch_checkpoint, write_checkpoint_info
from scaling.train.callbacks import step_ended


class Checkpointing(L.Callback):
    """checkpoints/last.ckpt: every `checkpoint_every_s` seconds, when asked to stop (Ctrl-C,
    `kill`, Slurm's `scancel`: finish the step, save, stop; a second signal is abrupt outside
    Slurm) and on submitit's USR2 (save, and submitit requeues the job).
    USR2 is blocked before any thread starts (scaling/signals.py) and let through only here,
    at a step boundary, so a checkpoint never holds half an update."""

    def __init__(self, cfg: TrainConfig, plan, ckpt_path: Path):
        self.cfg, self.plan, self.ckpt_path = cfg, plan, ckpt_path
        self.stop_asked = False           # a stop signal seen by this process
        self._seen = -1
        self._blocked = False
        self._t_ckpt = time.monotonic()

    def on_train_start(self, trainer, module):
        self._seen = trainer.global_step
        self._t_ckpt = time.monotonic()
        if threading.current_thread() is not threading.main_thread():
            return
        # Lightning turns SIGTERM into a clean exit without a checkpoint (and, under Slurm,
        # a job recorded as completed): ours finishes the step, saves and stops instead.
        signal.signal(signal.SIGTERM, stop_handler(self, trainer, slurm=bool(os.environ.get("SLURM_JOB_ID"))))
        # Ignored by a sweep's launcher for its jobs: it stops each with one SIGTERM.
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, stop_handler(self, trainer, slurm=False))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
            self._blocked = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not step_ended(trainer, self._seen):
            return
        step = self._seen = trainer.global_step
        last = step >= self.plan.steps
        if step in self.cfg.branch_steps:
            # A wsd trunk's state where a branch's cooldown starts, before any stop or
            # last.ckpt: a checkpoint past this step implies this one is written.
            write_checkpoint(trainer, branch_checkpoint(self.ckpt_path.parent.parent, step))
        if self._agree_to_stop(trainer, step, last):
            trainer.should_stop = True
        elif not last and not trainer.should_stop and time.monotonic() - self._t_ckpt > self.cfg.checkpoint_every_s:
            self.save_last(trainer)
        if self._blocked:
            # The step boundary: a pending USR2 is delivered here (its handler runs before
            # the next line), then the signal is held again until the next boundary.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})

    def _agree_to_stop(self, trainer, step: int, last: bool) -> bool:
        if self.plan.world == 1:
            return self.stop_asked
        # A signal reaches the ranks at different moments; they must stop after the same
        # step. Agreed at the logging steps only: the same steps on every rank, which sync
        # with the host anyway.
        if step % self.cfg.log_every and not last:
            return False
        flag = torch.tensor(int(self.stop_asked), device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag)
        return bool(flag)

    def save_last(self, trainer) -> None:
        """Write checkpoints/last.ckpt atomically (rundir.atomic_file: a kill -9 or a full
        disk mid-write leaves the previous checkpoint as it was). Safe between steps and from
        a signal handler (USR2 is held back during a step)."""
        write_checkpoint(trainer, self.ckpt_path)
        if trainer.global_rank == 0:
            # After the checkpoint: `status` reads the step it holds without loading torch.
            step = trainer.global_step
            write_checkpoint_info(self.ckpt_path.parent.parent, step, step * self.plan.tokens_per_step)
        self._t_ckpt = time.monotonic()


def write_checkpoint(trainer, path: Path) -> None:
    """The trainer's state into `path`, atomically (a temp file renamed over it)."""
    if trainer.world_size > 1:
        # trainer.save_checkpoint has a barrier: from a signal handler under DDP it
        # deadlocks. Rank 0 writes the state directly (the ranks' states are identical).
        if trainer.global_rank == 0:
            state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            with atomic_file(path) as tmp:
                trainer.strategy.checkpoint_io.save_checkpoint(state, tmp)
    else:
        with atomic_file(path) as tmp:
            trainer.save_checkpoint(tmp, weights_only=False)


def stop_handler(ckpt: Checkpointing, trainer, slurm: bool):
    """The handler of a stop signal (SIGTERM, SIGINT) for `ckpt`'s run. The first signal:
    finish this step, checkpoint, end the start as stopped (resumable). A second one is
    abrupt at a terminal (KeyboardInterrupt); under Slurm it is only logged: a task can be
    signalled more than once for one `scancel` (directly, and through srun), and the
    scheduler's SIGKILL after its KillWait is the abrupt end there."""
    def stop(signum, frame):
        name = signal.Signals(signum).name
        if ckpt.stop_asked:
            if not slurm:
                raise KeyboardInterrupt
            print(f"{name} again: already stopping at this step's end", file=sys.stderr, flush=True)
            return
        if trainer.global_rank == 0:
            print(f"\n{name}: stopping after this step, checkpointed; rerun to resume", file=sys.stderr, flush=True)
        ckpt.stop_asked = True   # acted on at the step's end, by every rank at once

    return stop
