"""A run's plan, from its config and the data's vocabulary: the model's shape, the number of
optimizer steps its token budget buys, the batch split over processes, the learning rate and
its schedule, the validation steps. Torch-free: `sweep plan` and `tune` plan runs without
loading torch, and the trainer follows the same plan.

The schedule ends at the run's own budget, as Chinchilla requires of every point of a scaling
law: warmup, then either cosine to min_lr_ratio of the peak at the last step, or WSD (warmup,
stable at the peak, then a cooldown over the last cooldown_frac of the steps to min_lr_ratio of
the peak; Hägele et al. 2024). A WSD run's lr before its cooldown does not depend on its length,
so one long run (a trunk) holds every shorter run's state at its cooldown's start: a branch
starts there and cools down (scaling/sweep/branches.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scaling.base.config import TrainConfig, parse_count
from scaling.base.errors import UserError
from scaling.base.shapes import ModelConfig, model_config, run_lengths


LR_CAP = 6e-3   # the rule's ceiling: small models' rule of N would climb past where they train stably


def _lr_uncapped(n_params_nonembed: int) -> float:
    return 2e-3 * (max(n_params_nonembed, 1) / 1e7) ** (-1 / 3)


def lr_rule(n_params_nonembed: int) -> float:
    """Peak learning rate by rule of N rather than by search (OLMo's ladder: lr ∝ N^-1/3),
    anchored at 2e-3 for 10M non-embedding parameters (1.6e-4 at AlexaTM's 20B, whose
    paper used 1e-4), at most LR_CAP. Per-size tuning with `scaling tune` refines it."""
    return min(LR_CAP, _lr_uncapped(n_params_nonembed))


def lr_capped(n_params_nonembed: int) -> bool:
    """Whether the rule's cap sets this size's lr (below about 370K non-embedding parameters):
    every such size gets the same lr, so the rule does not follow N there."""
    return _lr_uncapped(n_params_nonembed) >= LR_CAP


def lr_at(step: int, peak: float, total: int, warmup: int, min_ratio: float, schedule: str = "cosine",
          cooldown: int = 0, shape: str = "1-sqrt") -> float:
    """Linear warmup, then either cosine from peak down to min_ratio * peak at step == total,
    or (wsd) the peak until the last `cooldown` steps and a cooldown of `shape` from the peak
    down to min_ratio * peak at step == total. The cooldown's first step still trains at the
    peak: a branch's first step takes the lr its trunk's checkpoint holds."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "wsd":
        progress = min(1.0, max(0.0, (step - (total - cooldown)) / max(1, cooldown)))
        fall = math.sqrt(progress) if shape == "1-sqrt" else progress
        return peak * (min_ratio + (1 - min_ratio) * (1 - fall))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def cooldown_steps(cfg: TrainConfig, steps: int) -> int:
    """A wsd run's cooldown steps (0 under cosine): cooldown_frac of its steps, at least 1."""
    return max(1, round(cfg.cooldown_frac * steps)) if cfg.schedule == "wsd" else 0


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    return cfg.warmup_steps or max(1, round(cfg.warmup_frac * steps))


def run_steps(cfg: TrainConfig) -> int:
    """The optimizer steps a config's token budget buys (whole batches)."""
    budget = parse_count(cfg.tokens, "token budget")
    return cfg.whole_batches(budget, "token budget") // cfg.tokens_per_step


def branch_step(cfg: TrainConfig) -> int:
    """The step a wsd run's cooldown starts at: where a branch of this length leaves its trunk."""
    steps = run_steps(cfg)
    return steps - cooldown_steps(cfg, steps)


def val_schedule(total_steps: int, points: int) -> list[int]:
    """Steps at which validation runs: log-spaced over the run, always including the last
    step, plus step 0 (the untrained model), so Approach 1 gets a loss curve per run."""
    if total_steps <= 1 or points <= 1:
        return [0, total_steps]
    first = max(1, total_steps // 2 ** (points - 1))
    steps = np.unique(np.round(np.geomspace(first, total_steps, points)).astype(int))
    return [0] + [int(s) for s in steps]


@dataclass
class RunPlan:
    model: ModelConfig
    steps: int
    tokens_per_step: int
    warmup_steps: int
    lr: float
    val_steps: list[int]
    flops_per_step: float
    enc_len: int
    dec_len: int
    world: int           # processes sharing each batch (devices x num_nodes)
    batch_size: int      # global sequences per optimizer step
    micro_batch: int     # sequences per process per forward/backward
    accum: int           # micro-batches per process per step (gradient accumulation)
    tokens_budget: int
    schedule: str = "cosine"
    cooldown_steps: int = 0      # wsd: the last steps, from the peak down to min_lr_ratio x peak
    cooldown_shape: str = "1-sqrt"
    min_lr_ratio: float = 0.1

    def lr_factor(self, step: int) -> float:
        """The lr at `step` as a share of the peak (the optimizer's LambdaLR)."""
        return lr_at(step, 1.0, self.steps, self.warmup_steps, self.min_lr_ratio, self.schedule,
                     self.cooldown_steps, self.cooldown_shape)


def make_plan(cfg: TrainConfig, vocab_size: int) -> RunPlan:
    model = model_config(cfg.params, vocab_size, cfg.seq_len, cfg.tied_embeddings, cfg.arch)
    enc_len, dec_len = run_lengths(cfg.seq_len, cfg.noise_density, cfg.arch, cfg.clm_ratio)
    world = cfg.devices * cfg.num_nodes
    share = cfg.batch_size // world            # TrainConfig.check: a multiple of world
    micro = cfg.micro_batch or share
    tokens_per_step = cfg.tokens_per_step
    budget = parse_count(cfg.tokens, "token budget")
    steps = run_steps(cfg)
    lr = cfg.lr if cfg.lr is not None else lr_rule(model.n_params(embeddings=False))
    warmup, cooldown = warmup_steps(cfg, steps), cooldown_steps(cfg, steps)
    if cooldown and warmup > steps - cooldown:
        raise UserError(f"warmup_steps: {warmup} warmup steps run into the cooldown, which starts at step "
                        f"{steps - cooldown} of {steps}")
    return RunPlan(
        model=model, steps=steps, tokens_per_step=tokens_per_step,
        warmup_steps=warmup, lr=lr, schedule=cfg.schedule, cooldown_steps=cooldown,
        cooldown_shape=cfg.cooldown_shape, min_lr_ratio=cfg.min_lr_ratio,
        val_steps=val_schedule(steps, cfg.val_points),
        flops_per_step=float(model.train_flops(enc_len, dec_len)) * cfg.batch_size,
        enc_len=enc_len, dec_len=dec_len, world=world, batch_size=cfg.batch_size, micro_batch=micro,
        accum=share // micro, tokens_budget=budget,
    )
