"""The training loop, as Lightning parts. TrainingRun (train.py) puts them together:

    BatchStream            each process's micro-batches, from a step on
    EncoderDecoderModule   the model, AdamW and its schedule, one micro-batch's loss: a step
    RunRecorder            metrics rows, validation, the data digest, divergence  (callback)
    Checkpointing          checkpoints/last.ckpt, USR2 at step boundaries, Ctrl-C (callback)
    Progress               the progress bar                                       (callback)

Callbacks run in that order at the end of each micro-batch; they act only at optimizer-step
boundaries (with gradient accumulation, several micro-batches make a step).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from scaling.base.config import TrainConfig
from scaling.train.model import IGNORE_INDEX, EncoderDecoder
from scaling.data.objectives import MixedObjective, ObjectiveConfig

VAL_SEED = 1234  # validation examples are the same for every run, whatever its seed
VAL_CHUNK = 64   # validation examples per forward pass (memory only: the examples are fixed)


def lr_at(step: int, peak: float, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup, then cosine from peak down to min_ratio * peak at step == total."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def example_hashes(idx: np.ndarray) -> np.ndarray:
    """An odd 64-bit number per example index (as int64): the weights of the data digest."""
    from scaling.data.objectives import splitmix64

    return (splitmix64(np.asarray(idx, dtype=np.uint64) + np.uint64(0x5CA1AB1E)) | np.uint64(1)).view(np.int64)


# ------------------------------------------------------------------ the data
class BatchStream(torch.utils.data.IterableDataset):
    """Yields this process's micro-batches (dicts of tensors) from step `start_step` on, forever.

    The global batch of step s is examples s*B ... s*B + B - 1, whatever the world size W:
    rank r takes its share of B / W, in `accum` micro-batches of `micro`. Each micro-batch
    carries the target-token count of the whole global batch (the loss's denominator) and
    each example's digest weight. Holds only paths and numbers so it pickles cheaply into a
    loader worker; the memory map is opened inside the iterating process. Its position is
    the optimizer step: `state_dict(step)` / `load_state_dict` put it in the checkpoint.
    """

    def __init__(self, shards_dir: str, obj_cfg: ObjectiveConfig, seed: int, plan):
        super().__init__()
        self.shards_dir, self.obj_cfg, self.seed = shards_dir, obj_cfg, seed
        self.batch_size, self.micro, self.accum, self.world = plan.batch_size, plan.micro_batch, plan.accum, plan.world
        self.rank = 0
        self.start_step = 0

    def state_dict(self, step: int) -> dict:
        return {"step": int(step)}

    def load_state_dict(self, state: dict) -> None:
        self.start_step = int(state["step"])

    def __iter__(self):
        from scaling.data.shards import TokenShards

        shards = TokenShards.open(self.shards_dir, "train")
        obj = MixedObjective(shards.tokens, shards.doc_starts, self.obj_cfg, self.seed)
        step, B = self.start_step, self.batch_size
        share = B // self.world
        while True:
            n_tok = int(obj.target_counts(np.arange(step * B, step * B + B)).sum())
            for m in range(self.accum):
                first = step * B + self.rank * share + m * self.micro
                idx = np.arange(first, first + self.micro)
                b = {k: torch.from_numpy(v) for k, v in obj.batch(idx).items()}
                b["ex_hash"] = torch.from_numpy(example_hashes(idx))
                b["n_tok_step"] = torch.tensor(n_tok)
                yield b
            step += 1


# ---------------------------------------------------------------- the module
class EncoderDecoderModule(L.LightningModule):
    """The math of a step: the model, AdamW with its schedule, one micro-batch's loss, and
    the guard that keeps a non-finite gradient out of the weights."""

    def __init__(self, cfg: TrainConfig, plan):
        super().__init__()
        self.cfg, self.plan = cfg, plan
        self.model = EncoderDecoder(plan.model)
        self.loss_fn = self.model.token_losses
        self.bad_grad_step: int | None = None   # the step whose gradient was not finite

    def configure_optimizers(self):
        cfg, plan = self.cfg, self.plan
        decay, no_decay = [], []
        for p in self.model.parameters():
            (no_decay if p.ndim < 2 else decay).append(p)  # biases and norm gains: no decay
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # Fused (one kernel for the whole update) on CPU too: on one thread it takes 136-311 us
        # a step at the demo's 25K-500K parameters, against 507-1692 us for foreach and
        # 724-1153 us for torch's CPU default (tensor by tensor), a large share of a small step.
        opt = torch.optim.AdamW(groups, lr=plan.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_at(s, 1.0, plan.steps, plan.warmup_steps, cfg.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_start(self):
        if self.cfg.compile and self.device.type == "cuda":
            self.loss_fn = torch.compile(self.model.token_losses)

    def training_step(self, batch, batch_idx):
        # One micro-batch: this rank's share of the global batch, or a piece of it.
        labels = batch["labels"]
        losses = self.loss_fn(batch["enc"], batch["dec"], labels)
        # The mean over the GLOBAL batch's target tokens, however it is split: Lightning
        # divides by the accumulation count and DDP averages over ranks, so the sum is scaled
        # back up by both. A 2-process run takes the 1-process run's gradient.
        loss = losses.sum() * (self.plan.world * self.plan.accum) / batch["n_tok_step"]
        with torch.no_grad():
            mask = labels != IGNORE_INDEX
            clm = batch["is_clm"][:, None]
            sums = torch.stack([
                (losses * ~clm).sum(), (mask & ~clm).sum(), (losses * clm).sum(), (mask & clm).sum(),
                losses.sum(), mask.sum(),
            ]).double()
            # Proof of the data position: over every example trained on, its index's odd weight
            # times its position-weighted targets, summed mod 2^64. A sum is the same over any
            # split into ranks and micro-batches: resumed, DDP and uninterrupted runs of one
            # config all end with the same digest.
            w = torch.arange(1, labels.shape[1] + 1, device=labels.device)
            digest = (batch["ex_hash"] * (labels.long() * w).sum(1)).sum()
        return {"loss": loss, "sums": sums, "digest": digest}

    def on_before_optimizer_step(self, optimizer):
        # After the backward (and DDP's all-reduce: every rank sees the same gradient), before
        # the update. Clipping here rather than through Trainer(gradient_clip_val): Lightning
        # refuses to clip for fused AdamW, which needs no unscaling under bf16.
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.cfg.grad_clip if self.cfg.grad_clip and self.cfg.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        if not bool(torch.isfinite(norm)):
            # A NaN/inf gradient must not reach the weights: AdamW skips parameters without a
            # gradient, so this step changes nothing, and the run stops as diverged.
            for p in params:
                p.grad = None
            self.bad_grad_step = self.global_step


def _boundary(trainer, seen: int) -> bool:
    """True once per optimizer step (at its last micro-batch)."""
    return trainer.global_step != seen


# --------------------------------------------------------- metrics callback
class RunRecorder(L.Callback):
    """A run's record as it trains: a metrics row every `log_every` steps, validation at the
    plan's log-spaced steps (the final one is the run's score), the data digest, and
    divergence. Its state (rows, digest, wall time so far, the stream's position) travels in
    the checkpoint under "scaling"."""

    def __init__(self, cfg: TrainConfig, plan, stream: BatchStream, shards_dir: str, obj_cfg: ObjectiveConfig):
        self.cfg, self.plan, self.stream, self.shards_dir, self.obj_cfg = cfg, plan, stream, shards_dir, obj_cfg
        self.rows: list[dict] = []
        self.final_val: dict | None = None
        self.diverged: str | None = None      # why, once the run diverged
        self.on_validation = None             # TrainingRun's hook: (step, val row) -> True stops ("pruned")
        self.on_start = None                  # TrainingRun's hook: (step this start resumed from) -> None
        self.pruned = False
        self.start_step = 0
        self.elapsed_before = 0.0             # wall seconds of earlier attempts (resume)
        self.last_loss: float | None = None
        self.device_name: str | None = None
        self.data_digest = 0                  # the digest restored from a checkpoint
        self._digest = None                   # the digest as a device tensor while training
        self._pending = None                  # this rank's part of the current step's digest
        self._sums = None                     # loss sums since the last metrics row
        self._seen = -1
        self._val = None
        self._peak = None
        self._t_start = self._t_last = time.monotonic()
        self._step_last = 0

    # -- lifecycle
    def on_fit_start(self, trainer, module):
        from scaling.train.run import device_peak

        self.stream.rank = trainer.global_rank   # ranks are known now; the loader iterates later
        self._peak, self.device_name = device_peak(module.device.type, str(trainer.precision))

    def on_train_start(self, trainer, module):
        self._t_start = self._t_last = time.monotonic()
        self._step_last = self._seen = trainer.global_step
        if self.on_start is not None:
            self.on_start(trainer.global_step)
        if trainer.global_step == 0 and not self.rows:
            self.validate(trainer, module, 0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._pending = outputs["digest"] if self._pending is None else self._pending + outputs["digest"]
        self._sums = outputs["sums"] if self._sums is None else self._sums + outputs["sums"]
        if not _boundary(trainer, self._seen):
            return   # a micro-batch inside a step
        step = self._seen = trainer.global_step
        self._fold_digest(module)
        if module.bad_grad_step is not None:
            self.diverged = f"gradient became non-finite at step {module.bad_grad_step + 1}; that update was skipped"
        last = step >= self.plan.steps
        if step % self.cfg.log_every == 0 or last or step in self.plan.val_steps:
            self._log_train(trainer, step)
        if not self.diverged and step in self.plan.val_steps:
            self.validate(trainer, module, step)
            self._t_last = time.monotonic()  # keep validation out of tokens/s
            if self.on_validation is not None and not last and self.on_validation(step, self.rows[-1]):
                self.pruned = True
        if self.diverged or self.pruned:
            trainer.should_stop = True

    def _fold_digest(self, module):
        # One tiny collective per step under DDP: every rank then holds the digest of the
        # whole global batch, so rank 0's checkpoint (even one taken from a signal handler,
        # with no collective possible) carries it.
        part = self._pending if self._pending is not None else torch.zeros((), dtype=torch.int64, device=module.device)
        if self.plan.world > 1:
            torch.distributed.all_reduce(part)
        if self._digest is None:
            self._digest = torch.tensor(self.data_digest, dtype=torch.int64, device=part.device)
        self._digest = self._digest + part
        self._pending = None

    def digest(self) -> int:
        return int(self._digest) if self._digest is not None else self.data_digest

    # -- metrics rows
    def _log_train(self, trainer, step):
        if self._sums is None:
            return
        if self.plan.world > 1:
            torch.distributed.all_reduce(self._sums)   # every rank logs at the same steps
        ld, nd, lc, nc, lt, nt = self._sums.tolist()  # one host sync per logged step
        self._sums = None
        plan = self.plan
        now = time.monotonic()
        dt = max(now - self._t_last, 1e-9)
        n = step - self._step_last
        self._t_last, self._step_last = now, step
        loss = lt / max(nt, 1)
        if not math.isfinite(loss) and not self.diverged:
            self.diverged = f"loss became non-finite at step {step}"
        self.rows.append({
            "split": "train", "step": step, "tokens": step * plan.tokens_per_step,
            "flops": step * plan.flops_per_step, "lr": trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0],
            "train_loss": loss, "train_loss_denoise": ld / nd if nd else None,
            "train_loss_clm": lc / nc if nc else None, "tokens_per_s": n * plan.tokens_per_step / dt,
            "mfu": n * plan.flops_per_step / dt / self._peak if self._peak else float("nan"),
            "wall_s": self.elapsed_before + now - self._t_start,
        })
        self.last_loss = loss

    # -- validation
    @torch.no_grad()
    def validate(self, trainer, module, step):
        cfg, plan = self.cfg, self.plan
        if self._val is None:
            from scaling.data.shards import TokenShards

            shards = TokenShards.open(self.shards_dir, "val")
            self._val = (MixedObjective(shards.tokens, shards.doc_starts, self.obj_cfg, VAL_SEED), shards.bytes_per_token)
        obj, bytes_per_token = self._val
        model = module.model
        was_training = model.training
        model.eval()
        # The same cfg.val_examples examples per task for every run of a sweep, whatever its
        # batch size or world size; rank r scores chunks r, r + W, ... and the sums are
        # reduced once. Per-example losses give the standard error of the score. Points
        # before the last (Approach 1's curves) score a fixed quarter of the set, so
        # validation stays a small share of a short run.
        n = cfg.val_examples if step == plan.steps else max(1, cfg.val_examples // 4)
        chunk = max(plan.micro_batch, VAL_CHUNK)
        sums = torch.zeros(2, 4, dtype=torch.float64, device=module.device)  # per task: loss, tokens, sum and sum of squares of example means
        for t, task in enumerate(("denoise", "clm")):
            for start in range(trainer.global_rank * chunk, n, chunk * plan.world):
                b = obj.batch(np.arange(start, min(n, start + chunk)), force=task)
                b = {k: torch.from_numpy(v).to(module.device) for k, v in b.items()}
                with trainer.precision_plugin.forward_context():
                    losses = model.token_losses(b["enc"], b["dec"], b["labels"]).double()
                tok = (b["labels"] != IGNORE_INDEX).sum(1).double()
                per_ex = losses.sum(1) / tok.clamp(min=1)
                sums[t] += torch.stack([losses.sum(), tok.sum(), per_ex.sum(), (per_ex * per_ex).sum()])
        if plan.world > 1:
            torch.distributed.all_reduce(sums)
        s = sums.tolist()
        out = {task: (s[t][0] / max(s[t][1], 1), s[t][1] / n) for t, task in enumerate(("denoise", "clm"))}
        # Standard error of the mean example loss: the noise of this score.
        se = {task: math.sqrt(max(s[t][3] / n - (s[t][2] / n) ** 2, 0.0) / max(n - 1, 1))
              for t, task in enumerate(("denoise", "clm"))}
        # The mixed loss is what training minimises: the token-weighted mixture.
        r = cfg.clm_ratio
        wd, wc = (1 - r) * out["denoise"][1], r * out["clm"][1]
        mixed = (wd * out["denoise"][0] + wc * out["clm"][0]) / max(wd + wc, 1e-12)
        to_bpb = 1 / (math.log(2) * bytes_per_token)
        row = {
            "split": "val", "step": step, "tokens": step * plan.tokens_per_step, "flops": step * plan.flops_per_step,
            "val_loss": mixed, "val_loss_denoise": out["denoise"][0], "val_loss_clm": out["clm"][0],
            "val_bpb": mixed * to_bpb, "val_bpb_denoise": out["denoise"][0] * to_bpb,
            "val_bpb_clm": out["clm"][0] * to_bpb,
            "val_se": math.hypot(wd * se["denoise"], wc * se["clm"]) / max(wd + wc, 1e-12),
        }
        self.rows.append(row)
        if not all(math.isfinite(row[k]) for k in ("val_loss", "val_loss_denoise", "val_loss_clm")):
            self.diverged = self.diverged or f"validation loss became non-finite at step {step}"
        if step == plan.steps:
            self.final_val = row
        if was_training:
            model.train()

    # -- checkpoint state
    def on_save_checkpoint(self, trainer, module, checkpoint):
        checkpoint["scaling"] = {
            "rows": self.rows, "step": trainer.global_step, "data_digest": self.digest(),
            "stream": self.stream.state_dict(trainer.global_step),
            "elapsed": self.elapsed_before + time.monotonic() - self._t_start,
        }

    def on_load_checkpoint(self, trainer, module, checkpoint):
        state = checkpoint.get("scaling", {})
        step = checkpoint["global_step"]
        self.rows = [r for r in state.get("rows", []) if r["step"] <= step]
        self.start_step = step
        self.elapsed_before = state.get("elapsed", 0.0)
        self.data_digest, self._digest = state.get("data_digest", 0), None
        self.stream.load_state_dict(state.get("stream", {"step": step}))
        # A checkpoint taken after the last step's validation (a USR2 at the very end): its
        # final score is in the rows; without it the resumed run, which has no step left to
        # validate at, would end "stopped at step N of N" on every rerun.
        self.final_val = next((r for r in self.rows if r["split"] == "val" and r["step"] == self.plan.steps), None)


# ------------------------------------------------------ checkpoint callback
class Checkpointing(L.Callback):
    """checkpoints/last.ckpt: every `checkpoint_every_s` seconds, when asked to stop (Ctrl-C,
    `kill`: finish the step, save, stop; a second signal is abrupt) and on submitit's USR2.
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
        if os.environ.get("SLURM_JOB_ID"):
            # Lightning turns SIGTERM into a clean exit 0, which Slurm would record as a
            # completed job that is never requeued; let submitit's USR2 path own it.
            signal.signal(signal.SIGTERM, lambda s, f: print("SIGTERM received; waiting for USR2/kill", file=sys.stderr))
        elif threading.current_thread() is threading.main_thread():
            def stop(signum, frame):
                if self.stop_asked:
                    raise KeyboardInterrupt
                if trainer.global_rank == 0:
                    print(f"\n{signal.Signals(signum).name}: stopping after this step; rerun to resume", file=sys.stderr)
                self.stop_asked = True   # acted on at the step's end, by every rank at once

            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
            self._blocked = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not _boundary(trainer, self._seen):
            return
        step = self._seen = trainer.global_step
        last = step >= self.plan.steps
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
        from scaling.base.rundir import atomic_file

        if trainer.world_size > 1:
            # trainer.save_checkpoint has a barrier: from a signal handler under DDP it
            # deadlocks. Rank 0 writes the state directly (the ranks' states are identical).
            if trainer.global_rank == 0:
                state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
                with atomic_file(self.ckpt_path) as tmp:
                    trainer.strategy.checkpoint_io.save_checkpoint(state, tmp)
        else:
            with atomic_file(self.ckpt_path) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)
        self._t_ckpt = time.monotonic()


# -------------------------------------------------------- progress callback
class Progress(L.Callback):
    """Tokens, loss and MFU on stderr (rank 0): every half second on a terminal, every ten
    seconds into a log file."""

    def __init__(self, plan, recorder: RunRecorder, enabled: bool):
        self.plan, self.recorder, self.enabled = plan, recorder, enabled
        self.bar = None
        self._seen = -1

    def on_train_start(self, trainer, module):
        if not self.enabled or trainer.global_rank != 0:
            return
        from tqdm.auto import tqdm

        per = self.plan.tokens_per_step
        self._seen = trainer.global_step
        self.bar = tqdm(total=self.plan.steps * per, initial=trainer.global_step * per, unit="tok",
                        unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                        mininterval=0.5 if sys.stderr.isatty() else 10.0, desc="train")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.bar is None or not _boundary(trainer, self._seen):
            return
        self._seen = trainer.global_step
        self.bar.update(self.plan.tokens_per_step)
        rows = self.recorder.rows
        if rows and rows[-1]["split"] == "train" and rows[-1]["step"] == trainer.global_step:
            self.bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", mfu=f"{rows[-1]['mfu']:.0%}", refresh=False)

    def on_train_end(self, trainer, module):
        if self.bar is not None:
            self.bar.close()
