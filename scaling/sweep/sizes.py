"""The model a run will train, known before it runs: plan and launch need its parameter
count and FLOPs per token, and must get exactly the shape the trainer builds.

The trainer's own rule (scaling.base.shapes.model_config) sizes the model from the data's
vocabulary, so the vocabulary is read from the token shards' meta.json. A sweep
file may state it (`[sweep] vocab_size`) so that a cluster sweep can be planned on a
laptop that does not hold the cluster's data; where the data is here, the two must agree.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.shapes import model_config
from scaling.data.shards import resolve_data


def _meta_vocab(shards: Path) -> int:
    meta = shards / "meta.json"
    try:
        return int(json.loads(meta.read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{meta}: cannot read the vocabulary size ({type(e).__name__}: {e})") from None


@lru_cache(maxsize=64)
def vocab_size(data: str | None, stated: int | None = None) -> int:
    """Vocabulary of a run's data: a shards directory's meta.json, else the stated one, else
    the shards the trainer resolves `data` to (the embedded corpus is built on first use)."""
    path = Path(data) if data not in (None, "", "default") else None
    if path is not None and (path / "meta.json").exists():
        real = _meta_vocab(path)
    elif stated is not None:
        return stated
    else:
        real = _meta_vocab(Path(resolve_data(data)))
    if stated is not None and stated != real:
        raise UserError(f"sweep.vocab_size = {stated}, but the data {data or '(embedded corpus)'} has a vocabulary of {real}")
    return real


def model_for(params: str, tied_embeddings: bool = True, seq_len: int = 128, data: str | None = None,
              stated_vocab: int | None = None, arch: str = "encdec"):
    return model_config(params, vocab_size(data, stated_vocab), seq_len, tied_embeddings, arch)


def check_stated_vocab(data: str | None, stated: int) -> None:
    """Before jobs are submitted: the stated vocabulary must be the data's real one, or every
    IsoFLOP run would spend a different budget than planned. Resolves (and if need be
    prepares) the data, as the jobs would."""
    path = Path(data) if data not in (None, "", "default") else None
    if path is None or not (path / "meta.json").exists():
        path = Path(resolve_data(data))
    real = _meta_vocab(path)
    if real != stated:
        raise UserError(f"sweep.vocab_size = {stated}, but the data {data or '(embedded corpus)'} has a vocabulary of {real}")
