"""The tests' tiny sweeps: their shards of real English and one writer for their sweep files.

Every test sweep shares the [sweep] header and the tiny-run [train] settings; a test adds its
own [train] lines, an [executor] section and its kind's section ([grid] or [isoflop])."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path


def tiny_shards(out: Path) -> Path:
    """Byte-level shards of real English: the docstrings of a few standard-library modules."""
    import argparse, collections, functools, itertools, json, os, pathlib, re, textwrap as tw  # noqa: E401

    from scaling.data.prepare import PrepareConfig, prepare

    docs = []
    for mod in (json, collections, argparse, pathlib, tw, functools, itertools, re, os, inspect):
        for obj in vars(mod).values():
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc and len(doc) > 200:
                docs.append(doc)
    return prepare(docs, out, PrepareConfig(tokenizer="bytes", val_fraction=0.1),
                   source={"paths": "stdlib docstrings"}, progress=False)


# The [train] lines most test sweeps add: a short validation and sparse logging.
QUICK_VAL = "val_points = 3\nval_examples = 32\nlog_every = 50\n"


def write_sweep_file(path: Path, shards: Path, *, name: str, kind: str, body: str,
                     train: str = "", executor: str = "") -> Path:
    """PATH holding a sweep of `kind` named `name`; `train` and `executor` are TOML lines
    (the [executor] section is left out when empty), `body` the kind's section. Returns PATH."""
    parts = [f'[sweep]\nname = "{name}"\nkind = "{kind}"\nvocab_size = 260\n',
             f'[train]\ndata = "{shards}"\nseq_len = 32\nbatch_size = 8\n' + textwrap.dedent(train).strip() + "\n"]
    if executor.strip():
        parts.append("[executor]\n" + textwrap.dedent(executor).strip() + "\n")
    parts.append(textwrap.dedent(body).strip() + "\n")
    path.write_text("".join(parts))
    return path
