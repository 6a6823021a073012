"""How a run is scored: the mixed loss (and its denoising and causal-LM parts) on the same
held-out examples for every run of a sweep, whatever its seed, batch or world size, in nats per
token and bits per byte, with the standard error of the score. The last point scores the
whole set (the run's score); earlier points (Approach 1's curves) a fixed quarter of it.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch

from scaling.base.config import TrainConfig
from scaling.data.objectives import MixedObjective, ObjectiveConfig
from scaling.data.shards import TokenShards
from scaling.train.model import IGNORE_INDEX
from scaling.train.rank_chunks import rank_chunks
from scaling.train.task_scores import task_scores

VAL_SEED = 1234  # validation examples are the same for every run, whatever its seed
VAL_CHUNK = 64   # validation examples per forward pass (memory only: the examples are fixed)


class Validation:
    """Scores the model on the validation split; every rank scores its chunks, the sums are
    reduced once. The run's downstream tasks (`tasks`, encoded: scaling/data/tasks.py) are
    scored at every point, all of them (task_scores.py)."""

    def __init__(self, cfg: TrainConfig, plan, shards_dir: str, obj_cfg: ObjectiveConfig, tasks=()):
        self.cfg, self.plan, self.shards_dir, self.obj_cfg, self.tasks = cfg, plan, shards_dir, obj_cfg, list(tasks)
        self._val = None

    @torch.no_grad()
    def score(self, trainer, module, step: int) -> dict:
        """The metrics row ("split": "val") of this step."""
        cfg, plan = self.cfg, self.plan
        if self._val is None:   # opened at the first point, in the process that trains
            self._val = val_objective(self.shards_dir, self.obj_cfg)
        obj, bytes_per_token = self._val
        model = module.model
        was_training = model.training
        model.eval()
        # Points before the last (Approach 1's curves) score a fixed quarter of the set, so
        # validation stays a small share of a short run.
        n = cfg.val_examples if step == plan.steps else max(1, cfg.val_examples // 4)
        lockstep = cfg.strategy == "fsdp"   # every forward of a sharded model gathers from all ranks
        sums = task_sums(model, obj, n, max(plan.micro_batch, VAL_CHUNK), module.device,
                         trainer.global_rank, plan.world, trainer.precision_plugin.forward_context,
                         lockstep=lockstep)
        if plan.world > 1:
            torch.distributed.all_reduce(sums)
        row = {"split": "val", "step": step, "tokens": step * plan.tokens_per_step, "flops": step * plan.flops_per_step,
               **val_scores(sums, n, cfg.clm_ratio, bytes_per_token, obj.n_windows)}
        if self.tasks:
            t0 = time.monotonic()
            row.update(task_scores(model, self.tasks, {"pad": self.obj_cfg.pad_id, "clm": self.obj_cfg.clm_id},
                                   module.device, max(plan.micro_batch, VAL_CHUNK), trainer.global_rank, plan.world,
                                   trainer.precision_plugin.forward_context, torch.distributed.all_reduce,
                                   lockstep=lockstep))
            row["task_s"] = time.monotonic() - t0   # the tasks' share of the run (bench/bench_tasks.py)
        if was_training:
            model.train()
        return row


def val_objective(shards_dir, obj_cfg: ObjectiveConfig) -> tuple[MixedObjective, float]:
    """The validation examples (the same for every run of a sweep) and the split's bytes per token."""
    shards = TokenShards.open(shards_dir, "val")
    # The scored examples (ObjectiveConfig.scored): a decoder-only run that trained on whole
    # windows is scored on the same targets as an encoder-decoder, in the same bits per byte.
    return MixedObjective(shards.tokens, shards.doc_starts, obj_cfg.scored(), VAL_SEED), shards.bytes_per_token


@torch.no_grad()
def task_sums(model, obj: MixedObjective, n: int, chunk: int, device, rank: int = 0, world: int = 1,
              forward_context=contextlib.nullcontext, lockstep: bool = False) -> torch.Tensor:
    """(2, 4) float64 sums per task (denoise, clm) over validation examples 0..n-1 of this
    rank: loss, target tokens, and the sum and sum of squares of example means. The rank's
    chunks, and `lockstep` (a sharded model), are rank_chunks.py's: the sums over ranks are
    the same whatever the world size. A kept model (scaling.load_run) is scored by this same
    function."""
    sums = torch.zeros(2, 4, dtype=torch.float64, device=device)
    for t, task in enumerate(("denoise", "clm")):
        for start, counts in rank_chunks(n, chunk, rank, world, lockstep):
            b = obj.batch(np.arange(start, min(n, start + chunk)), force=task)
            b = {k: torch.from_numpy(v).to(device) for k, v in b.items()}
            with forward_context():
                losses = model.token_losses(b["enc"], b["dec"], b["labels"]).double()
            if not counts:
                continue
            tok = (b["labels"] != IGNORE_INDEX).sum(1).double()
            per_ex = losses.sum(1) / tok.clamp(min=1)
            sums[t] += torch.stack([losses.sum(), tok.sum(), per_ex.sum(), (per_ex * per_ex).sum()])
    return sums


def val_scores(sums: torch.Tensor, n: int, clm_ratio: float, bytes_per_token: float,
               windows: int | None = None) -> dict:
    """The validation columns of a metrics row from task_sums (reduced over ranks). `windows`:
    the validation split's distinct windows, where fewer than n (examples past them score the
    same windows again)."""
    s = sums.tolist()
    out = {task: (s[t][0] / max(s[t][1], 1), s[t][1] / n) for t, task in enumerate(("denoise", "clm"))}
    # Standard error of the mean example loss: the noise of this score. Examples that score a
    # window again are not new evidence about the split, so the error counts distinct windows.
    m = min(n, windows) if windows else n
    se = {task: math.sqrt(max(s[t][3] / n - (s[t][2] / n) ** 2, 0.0) / max(m - 1, 1))
          for t, task in enumerate(("denoise", "clm"))}
    # The mixed loss is what training minimises: the token-weighted mixture.
    r = clm_ratio
    wd, wc = (1 - r) * out["denoise"][1], r * out["clm"][1]
    mixed = (wd * out["denoise"][0] + wc * out["clm"][0]) / max(wd + wc, 1e-12)
    to_bpb = 1 / (math.log(2) * bytes_per_token)
    return {
        "val_loss": mixed, "val_loss_denoise": out["denoise"][0], "val_loss_clm": out["clm"][0],
        "val_bpb": mixed * to_bpb, "val_bpb_denoise": out["denoise"][0] * to_bpb,
        "val_bpb_clm": out["clm"][0] * to_bpb,
        "val_se": math.hypot(wd * se["denoise"], wc * se["clm"]) / max(wd + wc, 1e-12),
    }
