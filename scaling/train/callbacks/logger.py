"""The run's metrics rows, as RunRecorder makes them, sent on to the run's optional
Lightning logger (csv, tensorboard, wandb, mlflow: trainer.make_logger) for people who watch
curves there. metrics.parquet stays the record every later step reads.
"""

from __future__ import annotations

import lightning as L

from scaling.train.callbacks.recorder import RunRecorder


class MetricsLogging(L.Callback):
    """After RunRecorder, at every step's end: the rows it added since the last call, each
    logged at its step (train rows: loss, lr, tokens/s, MFU; validation rows: the losses and
    bits per byte of each objective). Rank 0; nothing without a logger."""

    def __init__(self, recorder: RunRecorder, hparams: dict):
        self.recorder, self.hparams = recorder, hparams
        self._sent = 0

    def on_train_start(self, trainer, module):
        # A resumed start's rows up to its checkpoint were sent by the start that made them.
        fresh = trainer.global_step == 0
        self._sent = 0 if fresh else len(self.recorder.rows)
        if trainer.logger is not None and trainer.global_rank == 0 and fresh:
            trainer.logger.log_hyperparams(self.hparams)
        self._flush(trainer)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._flush(trainer)

    def _flush(self, trainer) -> None:
        rows = self.recorder.rows[self._sent:]
        self._sent = len(self.recorder.rows)
        if not rows or trainer.logger is None or trainer.global_rank != 0:
            return
        for r in rows:
            split = r["split"]
            metrics = {f"{split}/{k.removeprefix(split + '_')}": float(v) for k, v in r.items()
                       if k not in ("split", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}
            trainer.logger.log_metrics(metrics, step=int(r["step"]))
        trainer.logger.save()
