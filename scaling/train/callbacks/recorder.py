"""A run's record as it trains: metrics rows, validation at the plan's points, the data digest
that proves the data position, and divergence.
"""

from __future__ import annotations

import math
import time

import lightning as L
import torch

from scaling.base.config import TrainConfig
from scaling.data.objectives import ObjectiveConfig
from scaling.train.callbacks import step_ended
from scaling.train.digest import DataDigest
from scaling.train.speed import SpeedMonitor
from scaling.train.stream import BatchStream
from scaling.train.validation import Validation


class RunRecorder(L.Callback):
    """A run's record as it trains: a metrics row every `log_every` steps, validation at the
    plan's log-spaced steps (the final one is the run's score), the data digest, and
    divergence. Its state (rows, digest, wall time so far, the stream's position, divergence)
    travels in the checkpoint under "scaling".

    One piece: the metrics rows, the validation points, divergence and the checkpoint state
    share one list of rows and one clock; the math of each part lives in its own module
    (validation.py, digest.py, speed.py)."""

    def __init__(self, cfg: TrainConfig, plan, stream: BatchStream, shards_dir: str, obj_cfg: ObjectiveConfig,
                 on_validation=None, on_start=None, tasks=()):
        self.cfg, self.plan, self.stream, self.shards_dir, self.obj_cfg = cfg, plan, stream, shards_dir, obj_cfg
        self.rows: list[dict] = []
        self.final_val: dict | None = None
        self.diverged: str | None = None      # why, once the run diverged
        self.on_validation = on_validation    # TrainingRun's hook: (step, val row) -> True stops ("pruned")
        self.on_start = on_start              # TrainingRun's hook: (step this start resumed from) -> None
        self.pruned = False
        self.start_step = 0
        self.elapsed_before = 0.0             # wall seconds of earlier attempts (resume)
        self.last_loss: float | None = None
        self.data = DataDigest(plan.world)
        self.speed = SpeedMonitor(plan)
        self.validation = Validation(cfg, plan, shards_dir, obj_cfg, tasks)
        self._sums = None                     # loss sums since the last metrics row
        self._seen = -1
        self._t_start = time.monotonic()

    # -- lifecycle
    def on_fit_start(self, trainer, module):
        self.stream.rank = trainer.global_rank   # ranks are known now; the loader iterates later
        self.speed.measure_peak(module.device.type, str(trainer.precision))

    def on_train_start(self, trainer, module):
        self._t_start = time.monotonic()
        self._seen = trainer.global_step
        self.speed.restart(trainer.global_step)
        if self.on_start is not None:
            self.on_start(trainer.global_step)
        if trainer.global_step == 0 and not self.rows:
            self.validate(trainer, module, 0)
        if self.diverged:   # resumed from a checkpoint saved after a skipped step: train no further
            trainer.should_stop = True

    def on_train_end(self, trainer, module):
        # A start stopped (a signal) between a skipped step and the next logging step ends
        # diverged, not stopped: no update from that step on was applied.
        self.diverged = self.diverged or bad_gradient(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.data.add(outputs["digest"])
        self._sums = outputs["sums"] if self._sums is None else self._sums + outputs["sums"]
        if not step_ended(trainer, self._seen):
            return   # a micro-batch inside a step
        step = self._seen = trainer.global_step
        self.data.fold(module.device)
        last = step >= self.plan.steps
        if step % self.cfg.log_every == 0 or last or step in self.plan.val_steps:
            self.diverged = self.diverged or bad_gradient(module)   # where the loss sums sync anyway
            self._log_train(trainer, step)
        if not self.diverged and step in self.plan.val_steps:
            self.validate(trainer, module, step)
            self.speed.restart(step)  # keep validation out of tokens/s
            if self.on_validation is not None and not last and self.on_validation(step, self.rows[-1]):
                self.pruned = True
        if self.diverged or self.pruned:
            trainer.should_stop = True

    def digest(self) -> int:
        return self.data.value()

    @property
    def device_name(self) -> str | None:
        return self.speed.device_name

    # -- metrics rows
    def _log_train(self, trainer, step):
        if self._sums is None:
            return
        if self.plan.world > 1:
            torch.distributed.all_reduce(self._sums)   # every rank logs at the same steps
        ld, nd, lc, nc, lt, nt = self._sums.tolist()  # one host sync per logged step
        self._sums = None
        plan = self.plan
        loss = lt / max(nt, 1)
        if not math.isfinite(loss) and not self.diverged:
            self.diverged = f"loss became non-finite at step {step}"
        self.rows.append({
            "split": "train", "step": step, "tokens": step * plan.tokens_per_step,
            "flops": step * plan.flops_per_step, "lr": trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0],
            "train_loss": loss, "train_loss_denoise": ld / nd if nd else None,
            "train_loss_clm": lc / nc if nc else None, **self.speed.since_last(step),
            "wall_s": self.elapsed_before + time.monotonic() - self._t_start,
        })
        self.last_loss = loss

    # -- validation
    def validate(self, trainer, module, step):
        row = self.validation.score(trainer, module, step)
        self.rows.append(row)
        if not all(math.isfinite(row[k]) for k in ("val_loss", "val_loss_denoise", "val_loss_clm")):
            self.diverged = self.diverged or f"validation loss became non-finite at step {step}"
        if step == self.plan.steps:
            self.final_val = row

    # -- checkpoint state
    def on_save_checkpoint(self, trainer, module, checkpoint):
        checkpoint["scaling"] = {
            "rows": self.rows, "step": trainer.global_step, "data_digest": self.digest(),
            "stream": self.stream.state_dict(trainer.global_step),
            "elapsed": self.elapsed_before + time.monotonic() - self._t_start,
            # A checkpoint saved after a skipped step (before the next logging step noticed)
            # holds a later step count but the weights and AdamW state of before it: the
            # verdict travels with it. Only read here, not acted on: under DDP rank 0 saves alone.
            "diverged": self.diverged or bad_gradient(module),
        }

    def on_load_checkpoint(self, trainer, module, checkpoint):
        state = checkpoint.get("scaling", {})
        step = checkpoint["global_step"]
        self.rows = [r for r in state.get("rows", []) if r["step"] <= step]
        self.start_step = step
        self.elapsed_before = state.get("elapsed", 0.0)
        self.data.restore(state.get("data_digest", 0))
        self.stream.load_state_dict(state.get("stream", {"step": step}))
        self.diverged = state.get("diverged")
        # A checkpoint taken after the last step's validation (a USR2 at the very end): its
        # final score is in the rows; without it the resumed run, which has no step left to
        # validate at, would end "stopped at step N of N" on every rerun.
        self.final_val = next((r for r in self.rows if r["split"] == "val" and r["step"] == self.plan.steps), None)


def bad_gradient(module) -> str | None:
    """Why the run diverged, if a step's gradient was not finite. The module's flag lives on the
    device: this is a host sync, made only at logging steps, checkpoints and a start's end,
    never every step. Updates from that step on were skipped."""
    bad = module.bad_grad_step()
    return None if bad is None else f"gradient became non-finite at step {bad + 1}; no update from it on was applied"
