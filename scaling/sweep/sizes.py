"""The model a run will train, known before it runs: plan and launch need its parameter
count and FLOPs per token, and must get exactly the shape the trainer builds.

The trainer (scaling.train.make_plan) sizes the model with the data's vocabulary and
max_len = seq_len, so the vocabulary is read from the token shards' meta.json.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from scaling.errors import UserError


@lru_cache(maxsize=64)
def vocab_size(data: str | None) -> int:
    """Vocabulary of a run's data: a shards directory's meta.json, or the shards the trainer
    resolves `data` to (the embedded corpus is built into the cache on first use)."""
    path = Path(data) if data not in (None, "", "default") else None
    if path is None or not (path / "meta.json").exists():
        from scaling.train import resolve_data

        path = Path(resolve_data(data))
    meta = path / "meta.json"
    try:
        return int(json.loads(meta.read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{meta}: cannot read the vocabulary size ({type(e).__name__}: {e})") from None


def model_for(params: str, tied_embeddings: bool = True, seq_len: int = 128, data: str | None = None):
    from scaling.model import ModelConfig

    return ModelConfig.from_params(params, vocab_size=vocab_size(data), max_len=seq_len,
                                   tied_embeddings=tied_embeddings)
