"""The data digest: proof of a run's data position.

Over every example trained on, its index's odd 64-bit weight (stream.example_hashes) times its
position-weighted targets, summed mod 2^64 (EncoderDecoderModule.training_step computes a
micro-batch's part). A sum is the same over any split into ranks and micro-batches: resumed,
DDP and uninterrupted runs of one config all end with the same digest, which run.json records.
"""

from __future__ import annotations

import torch


class DataDigest:
    """The digest so far: this rank's parts of the current step, folded at its end."""

    def __init__(self, world: int):
        self.world = world
        self.restored = 0        # the digest restored from a checkpoint
        self._total = None       # the digest as a device tensor while training
        self._pending = None     # this rank's part of the current step's digest

    def add(self, part: torch.Tensor) -> None:
        self._pending = part if self._pending is None else self._pending + part

    def fold(self, device) -> None:
        """At a step's end. One tiny collective per step under DDP: every rank then holds the
        digest of the whole global batch, so rank 0's checkpoint (even one taken from a signal
        handler, with no collective possible) carries it."""
        part = self._pending if self._pending is not None else torch.zeros((), dtype=torch.int64, device=device)
        if self.world > 1:
            torch.distributed.all_reduce(part)
        if self._total is None:
            self._total = torch.tensor(self.restored, dtype=torch.int64, device=part.device)
        self._total = self._total + part
        self._pending = None

    def value(self) -> int:
        return int(self._total) if self._total is not None else self.restored

    def restore(self, value: int) -> None:
        self.restored, self._total = value, None
