"""A token shard directory on disk: the files it holds, the fields of its meta.json, the
format version this release reads and writes, and `read_meta`, the check that every reader
(scaling/data/shards.py) and the writer (scaling/data/prepare.py) make of a directory
before they trust it.

A shard directory (written by `scaling prepare`, or `ensure_default_shards()`):

    meta.json        tokenizer kind, vocab size, dtype, special ids, the tokenizer file's
                     sha256 and source, source hash and provenance, per-split
                     token/document/byte counts, versions
    tokenizer.json   the tokenizer: trained here (bpe, unigram) or the user's (hf-json);
    tokenizer.model  or the user's SentencePiece model (sentencepiece); neither for bytes
    train.bin        raw token ids, uint16 if vocab <= 65535 else uint32, every document
    val.bin          followed by <eos> (meta.json's eos_id)
    train_docs.npy   int64 start offset of each document in the .bin, plus a final sentinel
    val_docs.npy     equal to the token count (so doc i is tokens[starts[i]:starts[i+1]])

The split is by document: document i goes to validation when a hash of (i, seed) falls below
val_fraction, so it is deterministic, disjoint, and independent of the tokenizer.
`n_bytes` counts the UTF-8 bytes of a split's (normalised) text, so
bits/byte = loss_nats_per_token / ln 2 / bytes_per_token, comparable across tokenizers.
`n_tokens` includes the one <eos> per document.

A directory is written to a private temp dir and renamed into place, so a reader never sees a
half-written one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scaling.base.errors import UserError
from scaling.data.tokenizer import FILE_KINDS, KINDS, SPECIAL_ROLES, dtype_for

FORMAT_VERSION = 1
SPLITS = ("train", "val")
ID_KEYS = tuple(f"{role}_id" for role in SPECIAL_ROLES)   # pad_id, eos_id, clm_id, unk_id
_META_KEYS = ("format_version", "tokenizer", "vocab_size", "dtype", *ID_KEYS, "splits")


def read_meta(path) -> dict:
    """A shard directory's meta.json, checked: its keys, its format version, a known tokenizer
    (a user's file recorded with its sha256), special ids inside the vocabulary (pad, eos and
    clm distinct), a dtype that fits the vocabulary, and integer counts for each split."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: shard directory does not exist (run `scaling prepare`)")
    if not path.is_dir():
        raise UserError(f"{path}: not a shard directory")
    mp = path / "meta.json"
    try:
        meta = json.loads(mp.read_text())
    except FileNotFoundError:
        raise UserError(f"{mp}: missing; {path} is not a shard directory (run `scaling prepare`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{mp}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or any(k not in meta for k in _META_KEYS):
        raise UserError(f"{mp}: not shard metadata (needs {', '.join(_META_KEYS)})")
    if meta["format_version"] != FORMAT_VERSION:
        raise UserError(f"{mp}: format_version {meta['format_version']!r}, this version reads {FORMAT_VERSION}")
    if meta["tokenizer"] not in KINDS:
        raise UserError(f"{mp}: unknown tokenizer {meta['tokenizer']!r}")
    if meta["tokenizer"] in FILE_KINDS and not isinstance((meta.get("tokenizer_file") or {}).get("sha256"), str):
        raise UserError(f"{mp}: a {meta['tokenizer']} tokenizer needs tokenizer_file.sha256")
    if not isinstance(meta["vocab_size"], int) or meta["vocab_size"] < 1:
        raise UserError(f"{mp}: vocab_size {meta['vocab_size']!r} is not a vocabulary size")
    ids = [meta[k] for k in ID_KEYS]
    if any(not isinstance(i, int) or not 0 <= i < meta["vocab_size"] for i in ids) or len(set(ids[:3])) < 3:
        raise UserError(f"{mp}: special ids {dict(zip(ID_KEYS, ids))} must be distinct ids (unk aside) below vocab_size {meta['vocab_size']}")
    if meta["dtype"] not in ("uint16", "uint32") or np.dtype(meta["dtype"]) != dtype_for(meta["vocab_size"], str(mp)):
        raise UserError(f"{mp}: dtype {meta['dtype']!r} does not fit vocab_size {meta['vocab_size']}")
    for split in SPLITS:
        info = meta["splits"].get(split) if isinstance(meta["splits"], dict) else None
        if not isinstance(info, dict) or any(not isinstance(info.get(k), int) for k in ("n_tokens", "n_docs", "n_bytes")):
            raise UserError(f"{mp}: splits.{split} needs integer n_tokens, n_docs, n_bytes")
    return meta
