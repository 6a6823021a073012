"""What `scaling sweep plan` warns about a sweep before it runs: one line each.

- Embeddings more than half of a model's parameters: the loss of such a model follows its few
  non-embedding parameters, a law in total N bends with the vocabulary, and the sizes differ
  mostly in a table they share; the lines name the sizes.
- The lr rule's cap (scaling/train/schedule.py, `lr_capped`): below it every size trains at
  the same peak lr, so the rule no longer follows N; the line counts the runs there.
- Runs that see their data more than once (D past the training split's tokens): the line
  counts them and their passes; `launch` says it too, and `collect` writes unique_tokens.
- A validation split of fewer windows than `val_examples`: the scores repeat windows.
"""

from __future__ import annotations

from scaling.base.config import format_count
from scaling.data.objectives import unique_tokens
from scaling.sweep.collect import split_tokens
from scaling.sweep.spec import Sweep
from scaling.train.schedule import LR_CAP, lr_capped

EMBEDDING_SHARE = 0.5


def embedding_warning(sweep: Sweep) -> str | None:
    """The sizes (and how many runs) whose embeddings are more than half their parameters."""
    share: dict[str, float] = {}
    runs = 0
    for r in sweep.runs:
        f = 1 - r.n_params_nonembed / r.n_params
        if f > EMBEDDING_SHARE:
            share[format_count(r.n_params)] = f
            runs += 1
    if not share:
        return None
    sizes = ", ".join(f"N={n}: {100 * f:.0f}%" for n, f in sorted(share.items(), key=lambda kv: -kv[1]))
    vocab = sweep.vocab_size or "the data's"
    return (f"embeddings are more than half the parameters of {len(share)} size(s), {runs} run(s) ({sizes}; "
            f"vocabulary {vocab}): their loss follows the non-embedding part; take larger sizes or a smaller "
            f"vocabulary, or fit N without embeddings (--columns params=params_nonembed)")


def lr_cap_warning(sweep: Sweep) -> str | None:
    """How many of the runs whose lr is the rule of N sit at the rule's cap."""
    ruled = [r for r in sweep.runs if r.config.lr is None]
    capped = [r for r in ruled if lr_capped(r.n_params_nonembed)]
    if not capped:
        return None
    every = "every run" if len(capped) == len(sweep.runs) else f"{len(capped)} of {len(sweep.runs)} runs"
    return (f"lr: {every} sit{'s' if every == 'every run' else ''} at the lr rule's cap of {LR_CAP:g} "
            f"(non-embedding N up to {format_count(max(r.n_params_nonembed for r in capped))}): the rule does not "
            f"vary lr across them; set train.lr, or tune it per size (`scaling tune`, then lr = {{ tuned = ... }})")


def plan_warnings(sweep: Sweep) -> list[str]:
    """Every warning of `sweep plan`, one line each: the file's paths read as before the
    file-relative rule (spec.file_path), then the sweep's models."""
    return list(sweep.warnings) + [w for w in (embedding_warning(sweep), lr_cap_warning(sweep), repeat_warning(sweep),
                                               val_warning(sweep)) if w]


def _splits(sweep: Sweep, split: str) -> dict:
    """Tokens of `split` in each data directory the sweep's runs name (one read each)."""
    return {d: split_tokens(d, split) for d in {r.config.data for r in sweep.runs}}


def val_warning(sweep: Sweep) -> str | None:
    """Where the validation split has fewer windows than a run scores: examples past them score
    the same windows again (with other noise), so the score is less sure than its count says."""
    short = {}
    vals = _splits(sweep, "val")
    for r in sweep.runs:
        val = vals[r.config.data]
        if val is not None and val // r.config.seq_len < r.config.val_examples:
            short[r.config.data] = (val // r.config.seq_len, r.config.val_examples, val)
    if not short:
        return None
    data, (windows, asked, tokens) = next(iter(short.items()))
    return (f"validation: {data}'s validation split holds {windows} windows of the runs' seq_len "
            f"({format_count(tokens)} tokens), fewer than val_examples = {asked}: examples past them score the same "
            f"windows again, and loss_se counts {windows}; for a surer score, prepare with a larger --val-fraction")


def repeat_warning(sweep: Sweep) -> str | None:
    """The runs whose tokens exceed their data's training split (where the data is here): they
    repeat it, and a law fitted as if every token were new reads the repeats as fresh data."""
    over = []
    splits = _splits(sweep, "train")
    for r in sweep.runs:
        split = splits[r.config.data]
        seen = unique_tokens(r.tokens, split, r.config.seq_len) if split is not None else r.tokens
        if seen < r.tokens:
            over.append((r.tokens / seen, r.name, split))
    if not over:
        return None
    passes, worst, split = max(over)
    return (f"data: {len(over)} of {len(sweep.runs)} runs see their data more than once (up to {passes:.1f} passes, "
            f"{worst}, over a training split of {format_count(split)} tokens): `sweep collect` writes each run's "
            f"unique_tokens, and `scaling fit` models repeats past 4 passes (docs/fitting.md); for a law of fresh "
            f"data, prepare a larger corpus or take smaller budgets")
