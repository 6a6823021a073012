"""The data a run trains on: each process's micro-batches of the AlexaTM mixed objective, from
a step on, as a torch IterableDataset. Where the data stands is the optimizer step, so a
checkpoint holds the exact position and a resumed run sees exactly the examples it had not
seen (scaling/data/objectives.py makes example i a pure function of (seed, i)).
"""

from __future__ import annotations

import numpy as np
import torch

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError
from scaling.data.objectives import MixedObjective, ObjectiveConfig, splitmix64
from scaling.data.shards import TokenShards


def objective_config(cfg: TrainConfig, shards: TokenShards, shards_dir) -> ObjectiveConfig:
    """The objective of a run on these shards (their special tokens' ids)."""
    if shards.n_tokens < cfg.seq_len:
        raise UserError(f"{shards_dir}: training split has {shards.n_tokens} tokens, fewer than one window of {cfg.seq_len}")
    return ObjectiveConfig(
        seq_len=cfg.seq_len, clm_ratio=cfg.clm_ratio, noise_density=cfg.noise_density, mean_span=cfg.mean_span,
        pad_id=shards.meta["pad_id"], eos_id=shards.meta["eos_id"], clm_id=shards.meta["clm_id"],
        clm_window=cfg.arch == "decoder",
    )


def example_hashes(idx: np.ndarray) -> np.ndarray:
    """An odd 64-bit number per example index (as int64): the weights of the data digest."""
    return (splitmix64(np.asarray(idx, dtype=np.uint64) + np.uint64(0x5CA1AB1E)) | np.uint64(1)).view(np.int64)


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
