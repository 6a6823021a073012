"""What happens around a training step, one Lightning callback per concern, in the order they
run at the end of each micro-batch:

    recorder.py       RunRecorder: metrics rows, validation points, the data digest, divergence
    logger.py         MetricsLogging: the rows, to the optional Lightning logger
    checkpointing.py  Checkpointing: checkpoints/last.ckpt, USR2 at step boundaries, Ctrl-C
    progress.py       Progress: the progress bar

They act only at optimizer-step boundaries (with gradient accumulation, several micro-batches
make a step): `step_ended` tells.
"""

from __future__ import annotations


def step_ended(trainer, seen: int) -> bool:
    """True once per optimizer step (at its last micro-batch): `seen` is the callback's last step."""
    return trainer.global_step != seen
