"""What scoring a run's downstream tasks costs, for `sweep plan`'s time estimate.

At every validation point (step 0 and the plan's val_points) a run scores every row of its
tasks (example x option, scaling/data/tasks.py) in two forms. With an answer of a tokens
(a <= seq_len / 2) and the prompt cut to seq_len - a, the denoising form reads seq_len - a
tokens in the encoder and seq_len in the decoder, the causal-LM form seq_len - a + 1 and a:
at most 3 seq_len tokens a row, each a forward pass only, a third of a training token's
FLOPs (forward and backward). An upper bound: the tasks' batches are large where a small
run's steps are overhead-bound, so at the demo's settings the plan counts about 9% where
bench/bench_tasks.py measures 3-4% of a run's wall time.
"""

from __future__ import annotations

from scaling.base.config import TrainConfig
from scaling.data.tasks import scored_rows

TOKENS_PER_ROW = 3.0   # x seq_len, both forms, at most


def task_flops(cfg: TrainConfig, train_flops_per_token: float) -> float:
    """FLOPs of scoring `cfg.eval` at all of the run's validation points (0 without tasks)."""
    if not cfg.eval:
        return 0.0
    points = cfg.val_points + 1
    return points * scored_rows(cfg.eval) * TOKENS_PER_ROW * cfg.seq_len * train_flops_per_token / 3
