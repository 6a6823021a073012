"""The math of a training step, as a LightningModule: the encoder-decoder, AdamW and its
schedule (ending at the run's budget), one micro-batch's loss over the global batch's target
tokens, and the guard that keeps a non-finite gradient out of the weights. A reader follows a
step here on one screen; what happens around the steps (records, checkpoints, progress) is in
scaling/train/callbacks/.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from scaling.base.config import TrainConfig
from scaling.train.model import IGNORE_INDEX, EncoderDecoder


class EncoderDecoderModule(L.LightningModule):
    """The math of a step: the model, AdamW with its schedule, one micro-batch's loss, and
    the guard that keeps a non-finite gradient out of the weights."""

    def __init__(self, cfg: TrainConfig, plan, pad_id: int):
        super().__init__()
        self.cfg, self.plan = cfg, plan
        # The data's pad id (meta.json): a tokenizer the user brings may use 0 for a real token.
        self.model = EncoderDecoder(plan.model, pad_id=pad_id)
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
