"""One writer for the tests' sweep files: tiny runs on the test shards.

Every test sweep shares the [sweep] header and the tiny-run [train] settings; a test adds its
own [train] lines, an [executor] section and its kind's section ([grid] or [isoflop])."""

from __future__ import annotations

import textwrap
from pathlib import Path


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
