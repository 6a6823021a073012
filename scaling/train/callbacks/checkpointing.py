"""checkpoints/last.ckpt of a run: saved every few seconds, on a stop signal and on submitit's
USR2, always at a step boundary and atomically. A sharded run's (strategy = "fsdp") is a
folder with one shard per process.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import torch

from scaling.base.config import TrainConfig
from scaling.base.rundir import atomic_file, branch_checkpoint, temp_dir_beside, write_checkpoint_info
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
        self.sharded = cfg.strategy == "fsdp"   # every rank saves its shards, at agreed steps
        self.saved_step = -1                      # the step of this start's latest checkpoint

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
        agreed = not (step % self.cfg.log_every) or last
        due = time.monotonic() - self._t_ckpt > self.cfg.checkpoint_every_s
        stop, save = agree(self, trainer, agreed, due)
        if stop:
            trainer.should_stop = True
        elif save and not last and not trainer.should_stop:
            self.save_last(trainer)
        if self._blocked and (agreed or not self.sharded):
            # The step boundary: a pending USR2 is delivered here (its handler runs before
            # the next line), then the signal is held again until the next boundary. A sharded
            # run's ranks saved together just above if any of them held one.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})

    def save_last(self, trainer) -> None:
        """Write checkpoints/last.ckpt atomically (rundir.atomic_file: a kill -9 or a full
        disk mid-write leaves the previous checkpoint as it was). Safe between steps and from
        a signal handler (USR2 is held back during a step). A sharded run's is a folder, saved
        by every rank at once (save_sharded)."""
        if self.sharded:
            save_sharded(trainer, self.ckpt_path)
        else:
            write_checkpoint(trainer, self.ckpt_path)
        if trainer.global_rank == 0:
            # After the checkpoint: `status` reads the step it holds without loading torch.
            step = trainer.global_step
            write_checkpoint_info(self.ckpt_path.parent.parent, step, step * self.plan.tokens_per_step)
        self._t_ckpt = time.monotonic()
        self.saved_step = trainer.global_step


def agree(ckpt: Checkpointing, trainer, agreed: bool, due: bool) -> tuple[bool, bool]:
    """(stop, save) after this step. A signal reaches the ranks at different moments; they
    must stop after the same step, and a sharded run's ranks must save together (each writes
    its shards), when a checkpoint is `due` on any rank's clock or any rank holds submitit's
    USR2. Agreed at the logging steps only (`agreed`): the same steps on every rank, which
    sync with the host anyway. A DDP run also saves between them (rank 0 writes alone)."""
    if ckpt.plan.world == 1 and not ckpt.sharded:
        return ckpt.stop_asked, due
    if not agreed:
        return False, due and not ckpt.sharded
    usr2 = ckpt.sharded and ckpt._blocked and signal.SIGUSR2 in signal.sigpending()
    flags = torch.tensor([int(ckpt.stop_asked), int(due), int(usr2)], device=trainer.strategy.root_device)
    torch.distributed.all_reduce(flags)
    stop, due, usr2 = (bool(f) for f in flags.tolist())
    return stop, due or usr2


def save_sharded(trainer, ckpt_path: Path) -> None:
    """Every rank writes its shards (torch.distributed.checkpoint, through Lightning's
    ModelParallelStrategy) into a fresh folder beside last.ckpt; rank 0 then puts it in place:
    last.ckpt -> .last.ckpt.old, the folder -> last.ckpt, the old one removed. A kill between
    the two renames leaves .last.ckpt.old, whole, which a resume reads (checkpoint_folder). A
    collective: only at a step the ranks agreed on."""
    main = trainer.global_rank == 0
    if main:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(ckpt_path) if main else ckpt_path   # rank 0's path is the one used
    trainer.save_checkpoint(tmp, weights_only=False)
    if main:
        old = ckpt_path.with_name(f".{ckpt_path.name}{OLD}")
        if ckpt_path.exists():
            remove_checkpoint(old)
            os.rename(ckpt_path, old)
        os.rename(tmp, ckpt_path)
        remove_checkpoint(old)


OLD = ".old"   # .last.ckpt.old: a sharded checkpoint while its successor is put in place


def remove_checkpoint(path: Path) -> None:
    """A checkpoint file or a sharded checkpoint's folder, if there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def checkpoint_folder(path: Path) -> Path | None:
    """The sharded checkpoint a resume reads: `path` (checkpoints/last.ckpt) if it is a whole
    folder, else the previous one left by a save killed between its renames, else None.
    Whole: the shards' index (.metadata, written after every shard) and Lightning's state
    (meta.pt, written after it) are there."""
    for p in (path, path.with_name(f".{path.name}{OLD}")):
        if p.is_dir() and (p / ".metadata").is_file() and (p / "meta.pt").is_file():
            return p
    return None


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
