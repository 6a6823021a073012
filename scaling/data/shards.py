"""Token shards, read and found: `TokenShards`, one split of a shard directory memory-mapped
(the arrays every training run reads), `load_tokenizer`, the directory's tokenizer
(scaling/data/tokenizer_files.py), and `resolve_data`, which turns a run's `data` setting into
a shard directory: the one given, or the embedded corpus's (`ensure_default_shards`, built
into the cache on first use). A raw corpus is refused: which tokenizer its shards get is the
user's choice, made with `scaling prepare --tokenizer`. The directory's format is
scaling/data/layout.py's; writing one is scaling/data/prepare.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaling.base.errors import UserError
from scaling.data.corpus import cache_root, corpus_key
from scaling.data.layout import SPLITS, read_meta
from scaling.data.prepare import PrepareConfig, prepare_corpus
from scaling.data.tokenizer_files import load_tokenizer  # noqa: F401 (the readers' one import)


@dataclass
class TokenShards:
    """One split of a shard directory: `tokens[doc_starts[i]:doc_starts[i+1]]` is document i."""

    path: Path
    split: str
    tokens: np.ndarray
    doc_starts: np.ndarray
    meta: dict = field(repr=False)

    @classmethod
    def open(cls, path, split: str = "train") -> "TokenShards":
        path = Path(path)
        if split not in SPLITS:
            raise UserError(f"{path}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        meta = read_meta(path)
        info = meta["splits"][split]
        dtype = np.dtype(meta["dtype"])
        n = int(info["n_tokens"])
        bin_path, docs_path = path / f"{split}.bin", path / f"{split}_docs.npy"
        if not bin_path.is_file():
            raise UserError(f"{bin_path}: missing token file")
        size = bin_path.stat().st_size
        if size != n * dtype.itemsize:
            raise UserError(
                f"{bin_path}: {size} bytes, but meta.json says {n} tokens of {dtype.name} ({n * dtype.itemsize} bytes)"
            )
        # np.memmap cannot map an empty file; an empty split is a zero-length array.
        tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype)
        try:
            starts = np.load(docs_path, allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"{docs_path}: missing document index") from None
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{docs_path}: not a valid .npy document index ({e})") from None
        if (
            starts.dtype != np.int64
            or starts.ndim != 1
            or len(starts) != int(info["n_docs"]) + 1
            or starts[0] != 0
            or starts[-1] != n
            or (len(starts) > 1 and np.any(np.diff(starts) <= 0))
        ):
            raise UserError(
                f"{docs_path}: document index does not match meta.json "
                f"(want int64, {info['n_docs'] + 1} increasing offsets from 0 to {n})"
            )
        return cls(path=path, split=split, tokens=tokens, doc_starts=starts, meta=meta)

    @property
    def n_tokens(self) -> int:
        return int(self.meta["splits"][self.split]["n_tokens"])

    @property
    def n_docs(self) -> int:
        return int(self.meta["splits"][self.split]["n_docs"])

    @property
    def n_bytes(self) -> int:
        return int(self.meta["splits"][self.split]["n_bytes"])

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / self.n_tokens if self.n_tokens else float("nan")

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def doc(self, i: int) -> np.ndarray:
        """Document i's tokens, its trailing <eos> included."""
        return self.tokens[self.doc_starts[i] : self.doc_starts[i + 1]]



def ensure_default_shards(tokenizer: str = "bpe", vocab_size: int = 8192, spoken: bool = False,
                          seed: int = 0, val_fraction: float = 0.01, progress: bool = True) -> Path:
    """Shards of the embedded default corpus, built into the cache on first use.

    $SCALING_CACHE/shards/default-<tokenizer>-<vocab>[-spoken]-<corpus key>/; concurrent callers
    each build privately and the first rename wins.
    """
    cfg = PrepareConfig(tokenizer=tokenizer, vocab_size=vocab_size, spoken=spoken, val_fraction=val_fraction, seed=seed)
    name = f"default-{tokenizer}-{cfg.effective_vocab}{'-spoken' if spoken else ''}"
    if (seed, val_fraction) != (0, 0.01):
        name += f"-s{seed}-v{val_fraction:g}"
    out = cache_root() / "shards" / f"{name}-{corpus_key()}"
    if (out / "meta.json").exists():
        return out
    return prepare_corpus(["default"], out, cfg, force=False, progress=progress)


def resolve_data(data: str | None) -> Path:
    """A token shards directory: the one given, or the embedded corpus's (built into the cache
    on first use). A raw corpus is refused with the command that prepares it: training a
    tokenizer for it here would choose the tokenizer, and so the law's units, silently."""
    if data in (None, "", "default"):
        return ensure_default_shards()
    path = Path(data)
    if not path.exists():
        raise UserError(f"data {data}: no such directory")
    if path.is_dir() and (path / "meta.json").exists():
        return path
    raise UserError(
        f"data {data}: not token shards (no meta.json); prepare them first with "
        f"`scaling prepare --corpus {data} --tokenizer TOKENIZER --out DIR` "
        "(TOKENIZER: bpe, unigram, bytes, a tokenizer.json, a SentencePiece .model or a shard directory) and give DIR"
    )
