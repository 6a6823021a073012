"""`scaling score RUN FILE`: a kept model's loss and bits per byte on each document of a file,
per objective (denoising and CLM, built as training builds them, with a fixed seed), and over
the whole file: a table, or JSON lines with --json."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from scaling.base.errors import UserError
from scaling.data.prepare import read_corpus
from scaling.use.load import describe, load_run
from scaling.use.score import SCORE_SEED, score_texts


def register(sub) -> None:
    p = sub.add_parser(
        "score", help="a kept model's loss and bits per byte on each document of a file",
        description="Score the documents of FILE (.jsonl, one {\"text\": ...} per line, as `scaling prepare` "
                    "reads it; .txt/.md/.parquet too) with the model a completed run kept: per document and "
                    "over the file, loss (nats/token) and bits per byte for denoising and for CLM.")
    p.add_argument("run", type=Path, help="run directory of a completed run (its model.safetensors)")
    p.add_argument("file", type=Path, help="documents to score: FILE.jsonl (or .txt, .md, .parquet)")
    p.add_argument("--text-field", default="text", help="the JSON key or parquet column of the text (default text)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=SCORE_SEED,
                   help=f"seed of the dropped spans and CLM splits (default {SCORE_SEED}: scores repeat)")
    p.add_argument("--json", action="store_true", help="one JSON object per document, then the 'all' row")
    p.set_defaults(func=run)


def _cell(x: float) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else f"{x:.4f}"


def table(rows: list[dict]) -> str:
    head = ("doc", "tokens", "bytes", "loss denoise", "bpb denoise", "loss clm", "bpb clm")
    body = [(r["doc"], str(r["tokens"]), str(r["bytes"]), _cell(r["loss_denoise"]), _cell(r["bpb_denoise"]),
             _cell(r["loss_clm"]), _cell(r["bpb_clm"])) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    lines = [fmt(head)] + [fmt(r) for r in body]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))   # the "all" row below a rule
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UserError(f"{args.file}: no such file")
    texts = read_corpus([args.file], args.text_field)   # its own line for a bad line, before the model loads
    if not texts:
        raise UserError(f"{args.file}: no documents (every line empty or without {args.text_field!r})")
    kept = load_run(args.run, args.device)
    rows = score_texts(kept, texts, args.seed, where=str(args.file)).rows()
    print(describe(kept), file=sys.stderr)
    if args.json:
        for r in rows:
            print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}))
    else:
        print(table(rows))
    return 0
