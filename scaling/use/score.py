"""A kept model's loss on documents, per document and per objective, in nats per token and
bits per byte (`scaling score RUN FILE.jsonl`).

The examples are built by the training objective itself (scaling/data/objectives.py), with a
fixed seed, so a score repeats exactly; only where the windows start differs from training,
so that every token of a file is scored once:

* denoising: the file's documents are packed as `scaling prepare` packs a split (each
  followed by <eos>) and cut into consecutive windows of seq_len tokens (the last one ending at
  the file's end, its tokens already scored left out); the objective drops its spans and the
  decoder rewrites the window. Each target token's loss goes to the document it belongs to.
* CLM: each document in pieces of at most seq_len tokens from its start; the objective splits
  each piece at a random 20-80% and scores the continuation.

Bits per byte = loss / ln 2 / (the document's UTF-8 bytes / its tokens, <eos> included), as
validation converts a split's loss (scaling/train/validation.py). The "all" row is token-
weighted over every document, as validation scores a split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from scaling.base.errors import UserError
from scaling.data.objectives import MixedObjective
from scaling.train.model import IGNORE_INDEX

SCORE_SEED = 1234   # the validation set's seed: the drops and splits of a file never change
CHUNK = 64          # examples per forward pass (memory only)
TASKS = ("denoise", "clm")


class _PlacedWindows(MixedObjective):
    """The objective with its windows placed by the scorer rather than drawn: example i starts
    at starts[i]. Everything else (the spans dropped, the CLM split) is the objective's own."""

    def __init__(self, tokens, doc_starts, cfg, seed, starts: np.ndarray):
        super().__init__(tokens, doc_starts, cfg, seed)
        self.starts = np.asarray(starts, dtype=np.int64)

    def window_starts(self, idx: np.ndarray) -> np.ndarray:
        return self.starts[np.asarray(idx, dtype=np.int64)]


@dataclass
class Scores:
    """Per document (in file order) and task: summed nats and scored tokens; the documents'
    tokens (with <eos>) and UTF-8 bytes."""

    nats: dict[str, np.ndarray]
    scored: dict[str, np.ndarray]
    tokens: np.ndarray
    bytes: np.ndarray

    def rows(self) -> list[dict]:
        """One dict per document, then the "all" row: loss and bpb per task."""
        out = []
        for i in range(len(self.tokens)):
            out.append(self._row(str(i), i))
        out.append(self._row("all", slice(None)))
        return out

    def _row(self, name: str, sel) -> dict:
        tokens, n_bytes = int(np.sum(self.tokens[sel])), int(np.sum(self.bytes[sel]))
        row = {"doc": name, "tokens": tokens, "bytes": n_bytes}
        for task in TASKS:
            n = float(np.sum(self.scored[task][sel]))
            loss = float(np.sum(self.nats[task][sel])) / n if n else math.nan
            row[f"loss_{task}"] = loss
            row[f"bpb_{task}"] = loss / math.log(2) / (n_bytes / tokens) if n_bytes else math.nan
            row[f"scored_{task}"] = int(n)
        return row


def _stream(kept, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The documents packed as a split is: ids, each document followed by <eos>; and the starts."""
    ids = kept.tokenizer.encode_batch(texts)
    eos = kept.objective.eos_id
    docs = [np.asarray(list(d) + [eos], dtype=np.int64) for d in ids]
    starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return np.concatenate(docs), starts


def _token_losses(kept, obj: MixedObjective, idx: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(B, seq_len) losses and labels of examples idx of one task, CHUNK at a time."""
    losses, labels = [], []
    for s in range(0, len(idx), CHUNK):
        b = obj.batch(idx[s:s + CHUNK], force=task)
        t = {k: torch.from_numpy(b[k]).to(kept.device) for k in ("enc", "dec", "labels")}
        with torch.no_grad():
            losses.append(kept.model.token_losses(t["enc"], t["dec"], t["labels"]).double().cpu().numpy())
        labels.append(b["labels"])
    return np.concatenate(losses), np.concatenate(labels)


def _denoise(kept, tokens, doc_starts, seed) -> tuple[np.ndarray, np.ndarray]:
    L, n = kept.objective.seq_len, len(tokens)
    starts = list(range(0, n - L + 1, L))
    first_new = np.zeros(len(starts), dtype=np.int64)   # window positions already scored: none
    if n % L:                                           # the tail: a window ending at the end
        starts.append(n - L)
        first_new = np.append(first_new, L - n % L)
    obj = _PlacedWindows(tokens, doc_starts, kept.objective.scored(), seed, np.asarray(starts))
    losses, _ = _token_losses(kept, obj, np.arange(len(starts)), "denoise")
    pos = np.asarray(starts)[:, None] + np.arange(L)[None, :]
    new = np.arange(L)[None, :] >= first_new[:, None]
    doc = np.searchsorted(doc_starts, pos[new], side="right") - 1
    n_docs = len(doc_starts) - 1
    return np.bincount(doc, losses[new], n_docs), np.bincount(doc, minlength=n_docs).astype(np.float64)


def _clm(kept, tokens, doc_starts, seed) -> tuple[np.ndarray, np.ndarray]:
    L = kept.objective.seq_len
    piece_starts = np.concatenate([np.arange(s, e, L) for s, e in zip(doc_starts[:-1], doc_starts[1:])])
    obj = _PlacedWindows(tokens, doc_starts, kept.objective.scored(), seed, piece_starts)
    losses, labels = _token_losses(kept, obj, np.arange(len(piece_starts)), "clm")
    doc = np.searchsorted(doc_starts, piece_starts, side="right") - 1
    n_docs = len(doc_starts) - 1
    scored = (labels != IGNORE_INDEX).sum(1)
    return np.bincount(doc, losses.sum(1), n_docs), np.bincount(doc, scored, n_docs)


def score_texts(kept, texts: list[str], seed: int = SCORE_SEED, where: str = "documents") -> Scores:
    """Scores of `texts` under the kept model `kept` (scaling.use.load.KeptModel)."""
    if not texts:
        raise UserError(f"{where}: no documents to score")
    texts = kept.normalise(texts)   # bytes are counted after it, as `scaling prepare` counts them
    tokens, doc_starts = _stream(kept, texts)
    L = kept.objective.seq_len
    if len(tokens) < L:
        raise UserError(f"{where}: {len(tokens)} tokens in all, fewer than one window of {L} "
                        f"(the run's seq_len): denoising scores whole windows")
    nats, scored = {}, {}
    nats["denoise"], scored["denoise"] = _denoise(kept, tokens, doc_starts, seed)
    nats["clm"], scored["clm"] = _clm(kept, tokens, doc_starts, seed)
    n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
    return Scores(nats, scored, np.diff(doc_starts), n_bytes)

