"""The progress bar of a run (rank 0, on stderr): tokens, loss and MFU.
"""

from __future__ import annotations

import sys

import lightning as L
from tqdm.auto import tqdm

from scaling.train.callbacks import step_ended
from scaling.train.callbacks.recorder import RunRecorder


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
        per = self.plan.tokens_per_step
        self._seen = trainer.global_step
        self.bar = tqdm(total=self.plan.steps * per, initial=trainer.global_step * per, unit="tok",
                        unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                        mininterval=0.5 if sys.stderr.isatty() else 10.0, desc="train")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.bar is None or not step_ended(trainer, self._seen):
            return
        self._seen = trainer.global_step
        self.bar.update(self.plan.tokens_per_step)
        rows = self.recorder.rows
        if rows and rows[-1]["split"] == "train" and rows[-1]["step"] == trainer.global_step:
            self.bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", mfu=f"{rows[-1]['mfu']:.0%}", refresh=False)

    def on_train_end(self, trainer, module):
        if self.bar is not None:
            self.bar.close()
