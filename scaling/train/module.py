"""The math of a training step, as a LightningModule: the model (encoder-decoder or decoder-only), AdamW and its
schedule (ending at the run's budget), one micro-batch's loss over the global batch's target
tokens, and the guard that keeps a non-finite gradient out of the weights. A reader follows a
step here on one screen; what happens around the steps (records, checkpoints, progress) is in
scaling/train/callbacks/.
"""

from __future__ import annotations

import lightning as L
import torch

from scaling.base.config import TrainConfig
from scaling.train import sharding
from scaling.train.model import IGNORE_INDEX, build_model


class EncoderDecoderModule(L.LightningModule):
    """The math of a step: the model, AdamW with its schedule, one micro-batch's loss, and
    the guard that keeps a non-finite gradient out of the weights."""

    def __init__(self, cfg: TrainConfig, plan, pad_id: int):
        super().__init__()
        self.cfg, self.plan = cfg, plan
        # The data's pad id (meta.json): a tokenizer the user brings may use 0 for a real token.
        self.model = build_model(plan.model, pad_id=pad_id)   # EncoderDecoder or DecoderOnly (cfg.arch)
        self.loss_fn = self.model.token_losses
        # The first step whose gradient was not finite, -1 while none: on the device, read by
        # the host at the logging cadence and at checkpoints only (bad_grad_step).
        self.first_bad_step: torch.Tensor | None = None

    def configure_model(self):
        # Lightning calls this once the processes and the device mesh exist, before the optimizer.
        self.loss_fn = sharding.configure(self.model, self.cfg, self.trainer.precision, self.device_mesh)

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
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: plan.lr_factor(s))   # cosine or wsd
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
        # After the backward (and DDP's all-reduce or FSDP's reduce-scatter: every rank sees the
        # same norm), before the update. Clipping here rather than through
        # Trainer(gradient_clip_val): Lightning refuses to clip for fused AdamW.
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = sharding.local_norm(torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True))
        if self.cfg.grad_clip and self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.cfg.grad_clip, norm, foreach=True)
        self.first_bad_step = skip_updates_once_not_finite(optimizer, norm, self.first_bad_step, self.global_step)

    def bad_grad_step(self) -> int | None:
        """The first step whose gradient was not finite (a host sync: at the logging cadence,
        at a checkpoint, at a start's end)."""
        step = -1 if self.first_bad_step is None else int(self.first_bad_step)
        return step if step >= 0 else None


def skip_updates_once_not_finite(optimizer, norm: torch.Tensor, first_bad: torch.Tensor | None,
                                 step: int) -> torch.Tensor:
    """A NaN/inf gradient must not reach the weights, decided on the device (a host bool() of
    the norm would sync every step): fused AdamW skips the whole update (no Adam step, no
    decay) while its found_inf is 1. From the first bad step on every update is skipped, so
    the run keeps the weights of the step before until the recorder, at its next logging
    step, reads the returned first bad step (-1: none) and stops the run as diverged."""
    if first_bad is None:
        first_bad = torch.full((), -1, dtype=torch.long, device=norm.device)
    first_bad = torch.where(~torch.isfinite(norm) & (first_bad < 0), step, first_bad)
    getattr(optimizer, "_optimizer", optimizer).found_inf = (first_bad >= 0).float()
    return first_bad
