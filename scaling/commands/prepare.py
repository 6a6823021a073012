"""`scaling prepare`: turn a corpus into token shards (scaling/data/prepare.py writes them;
scaling/data/layout.py is their format) and print a one-line JSON summary of what was written."""

from __future__ import annotations

import argparse
import json

from scaling.base.errors import UserError
from scaling.data.layout import ID_KEYS
from scaling.data.prepare import PrepareConfig, prepare_corpus
from scaling.data.shards import TokenShards


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="turn a corpus into token shards",
        description="Tokenize a corpus into memory-mapped token shards with a deterministic "
        "train/validation split by document.",
    )
    p.add_argument(
        "--corpus", nargs="+", default=["default"], metavar="PATH",
        help="files or directories of .txt/.md/.rst (one document per file), .jsonl (one per line) "
        "or .parquet (one per row); 'default' (the default) is the embedded corpus",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="shard directory to write")
    p.add_argument("--tokenizer", default="bpe", metavar="KIND|PATH",
                   help="bpe | unigram | bytes: trained here (default bpe); or your own: a Hugging Face "
                   "tokenizer.json, a SentencePiece .model, or a shard directory whose tokenizer to reuse")
    p.add_argument("--vocab-size", default=None,
                   help="ids in a trained vocabulary, specials included (default 8192; not with a tokenizer file)")
    p.add_argument("--spoken", action="store_true", help="spoken form: lower case, no punctuation")
    p.add_argument("--val-fraction", default="0.01", help="share of documents for validation (default 0.01)")
    p.add_argument("--text-field", default="text", help="field (.jsonl) or column (.parquet) holding the text")
    p.add_argument("--seed", default="0", help="seed of the split (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing shard directory of a different corpus/config")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _number(kind, text: str, flag: str):
    try:
        return kind(text)
    except ValueError:
        raise UserError(f"{flag} {text!r}: not {'an integer' if kind is int else 'a number'}") from None


def run(args: argparse.Namespace) -> int:
    cfg = PrepareConfig(
        tokenizer=args.tokenizer,
        vocab_size=None if args.vocab_size is None else _number(int, args.vocab_size, "--vocab-size"),
        spoken=args.spoken,
        val_fraction=_number(float, args.val_fraction, "--val-fraction"),
        seed=_number(int, args.seed, "--seed"),
        text_field=args.text_field,
    )
    out = prepare_corpus(args.corpus, args.out, cfg, force=args.force, progress=not args.quiet)
    train, val = TokenShards.open(out, "train"), TokenShards.open(out, "val")
    summary = {
        "out": str(out),
        "tokenizer": train.meta["tokenizer"],
        "vocab_size": train.vocab_size,
        "special_ids": {k[:-3]: train.meta[k] for k in ID_KEYS},
        "train": {"tokens": train.n_tokens, "docs": train.n_docs, "bytes_per_token": round(train.bytes_per_token, 3)},
        "val": {"tokens": val.n_tokens, "docs": val.n_docs},
        "source_hash": train.meta["source"]["hash"][:16],
    }
    print(json.dumps(summary))
    return 0
