"""How a model is scored on downstream tasks (scaling/data/tasks.py): bits per byte of the
correct answer in two forms, and multiple-choice accuracy. One function for a run's
validation points and for a kept model (`scaling eval`), over any model with
`token_losses(enc_ids, dec_ids, labels)`.

The two forms (docs/tasks.md), both teacher-forced, only the answer's tokens scored:

- `bpb` (denoising form): the encoder reads the prompt; the decoder rewrites prompt + answer,
  as denoising rewrites its whole window: the answer is a span dropped from the window's end.
- `bpb_clm` (causal-LM form): the encoder reads `[CLM]` + prompt, the decoder continues with
  the answer, as the objective's causal-LM examples do.

bpb = the answers' summed loss in nats / ln 2 / their summed UTF-8 bytes. `acc` (`acc_clm`):
the share of examples whose correct choice has the lowest loss per byte of the choice.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from scaling.base.shapes import IGNORE_INDEX
from scaling.data.tasks import CHOICE, EncodedTask
from scaling.train.rank_chunks import rank_chunks

FORMS = ("denoise", "clm")
TASK_CHUNK = 64   # rows per forward pass (memory only)


def _batch(prompts, answers, form: str, pad_id: int, clm_id: int) -> dict[str, np.ndarray]:
    """enc, dec, labels of rows in `form`, padded at the end to the chunk's longest."""
    if form == "clm":
        encs = [np.concatenate([[clm_id], p]) for p in prompts]
        targets, skip = answers, [0] * len(answers)
    else:
        encs = prompts
        targets, skip = [np.concatenate([p, a]) for p, a in zip(prompts, answers)], [len(p) for p in prompts]
    B, Te, Td = len(encs), max(map(len, encs)), max(map(len, targets))
    enc = np.full((B, Te), pad_id, dtype=np.int64)
    labels = np.full((B, Td), IGNORE_INDEX, dtype=np.int64)
    dec = np.full((B, Td), pad_id, dtype=np.int64)
    for i, (e, t, s) in enumerate(zip(encs, targets, skip)):
        enc[i, : len(e)] = e
        labels[i, s: len(t)] = t[s:]
        dec[i, 1: len(t)] = t[:-1]   # decoder start token pad_id, as in training
    return {"enc": enc, "dec": dec, "labels": labels}


@torch.no_grad()
def row_losses(model, task: EncodedTask, form: str, special_ids: dict, device, chunk: int = TASK_CHUNK,
               rank: int = 0, world: int = 1, forward_context=contextlib.nullcontext,
               lockstep: bool = False) -> torch.Tensor:
    """(rows,) float64 summed answer loss in nats of each row; the rank scores its chunks
    (rank_chunks.py, `lockstep` for a sharded model) of the rows sorted by length (zeros
    elsewhere), so a sum over ranks is every row's."""
    out = torch.zeros(task.n_rows, dtype=torch.float64, device=device)
    order = np.argsort([len(p) + len(a) for p, a in zip(task.prompts, task.answers)], kind="stable")
    for start, counts in rank_chunks(task.n_rows, chunk, rank, world, lockstep):
        rows = order[start: start + chunk]
        b = _batch([task.prompts[i] for i in rows], [task.answers[i] for i in rows], form,
                   special_ids["pad"], special_ids["clm"])
        b = {k: torch.from_numpy(v).to(device) for k, v in b.items()}
        with forward_context():
            losses = model.token_losses(b["enc"], b["dec"], b["labels"]).double()
        if counts:
            out[torch.from_numpy(rows).to(device)] = losses.sum(1)
    return out


def task_columns(task: EncodedTask, losses: dict[str, np.ndarray]) -> dict[str, float]:
    """The task's columns from each form's row losses (reduced over ranks)."""
    name, correct = task.task.name, task.option == task.labels[task.example]
    out = {}
    for form, suffix in zip(FORMS, ("", "_clm")):
        loss = np.asarray(losses[form], dtype=np.float64)
        out[f"task.{name}.bpb{suffix}"] = float(loss[correct].sum() / (math.log(2) * task.n_bytes[correct].sum()))
        if task.task.kind == CHOICE:
            per_byte = loss / task.n_bytes
            best = np.full(len(task.labels), -1, dtype=np.int64)
            low = np.full(len(task.labels), np.inf)
            for r in range(task.n_rows):   # first lowest wins a tie, in choice order
                e = task.example[r]
                if per_byte[r] < low[e]:
                    low[e], best[e] = per_byte[r], task.option[r]
            out[f"task.{name}.acc{suffix}"] = float(np.mean(best == task.labels))
    return out


def task_scores(model, tasks: list[EncodedTask], special_ids: dict, device, chunk: int = TASK_CHUNK,
                rank: int = 0, world: int = 1, forward_context=contextlib.nullcontext, reduce=None,
                lockstep: bool = False) -> dict[str, float]:
    """Every task's columns (`task.<name>.bpb`, `.bpb_clm`, and `.acc`, `.acc_clm` for
    multiple choice). `reduce` sums a tensor over ranks in place (all_reduce) when world > 1;
    `lockstep` (a sharded model): every rank makes as many forward passes (rank_chunks.py)."""
    was_training = model.training
    model.eval()
    out = {}
    try:
        for task in tasks:
            losses = {}
            for form in FORMS:
                v = row_losses(model, task, form, special_ids, device, chunk, rank, world, forward_context, lockstep)
                if reduce is not None and world > 1:
                    reduce(v)
                losses[form] = v.cpu().numpy()
            out.update(task_columns(task, losses))
    finally:
        if was_training:
            model.train()
    return out
