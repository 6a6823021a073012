"""Gather a sweep's runs into the two tables the fits read.

- results.parquet: one row per run, completed or not (the `status` column says which; losses
  are null unless completed, so an unfinished run is listed but never mixed into a fit), with
  the vocabulary and window its FLOPs were counted by (the fit counts any N the same way) and
  the distinct tokens it saw (`unique_tokens`: below `tokens` where it repeated its data).
  Every option that can differ between runs or sweeps is a column too (the objective mix,
  lr and its schedule, batch, optimizer, seed, the sweep's name, the tokenizer and a key of
  the data), so the tables of several sweeps stack (`pl.concat(how="diagonal")`) and group
  (docs/sweeps.md lists the columns).
- curves.parquet: every validation point of every completed run (run, params, tokens,
  flops, loss), the loss curves Chinchilla's Approach 1 takes its lower envelope from.

Both carry the downstream tasks' columns (`task.<name>.bpb`, `.bpb_clm`, `.acc`, `.acc_clm`:
docs/tasks.md) of every task any run scored, null where a run did not score it: results from
run.json's "tasks" (the last point, or `scaling eval`), curves from every validation point.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import METRICS, TASK_PREFIX, RunStatus, write_parquet_atomic
from scaling.data.objectives import unique_tokens
from scaling.sweep.status import RunState, sweep_states

RESULTS = "results.parquet"
CURVES = "curves.parquet"
OBJECTIVES = ("mixed", "denoise", "clm")


def _schema():
    import polars as pl

    return {
        "run": pl.Utf8, "params": pl.Int64, "params_nonembed": pl.Int64, "tokens": pl.Int64,
        # The distinct tokens of those (below tokens where a run repeated its data): what the
        # fit's repeated-data law reads. Null where the run's data is not here to count.
        "unique_tokens": pl.Int64,
        "flops": pl.Float64, "budget": pl.Float64,
        "loss": pl.Float64, "loss_denoise": pl.Float64, "loss_clm": pl.Float64, "loss_se": pl.Float64,
        "bpb": pl.Float64, "bpb_denoise": pl.Float64, "bpb_clm": pl.Float64,
        "status": pl.Utf8, "wall_time_s": pl.Float64, "device": pl.Utf8, "error": pl.Utf8,
        # What the lab's FLOP count needs to count any N as these runs were counted
        # (scaling.base.flops): the architecture, the vocabulary, the window, the noise, tied
        # embeddings (and clm_ratio below: a decoder-only run of CLM alone reads whole windows).
        "arch": pl.Utf8,
        "vocab_size": pl.Int64, "seq_len": pl.Int64, "noise_density": pl.Float64, "tied_embeddings": pl.Boolean,
        # What else can differ between runs or sweeps: stacked tables group by these.
        "sweep": pl.Utf8, "seed": pl.Int64,
        "clm_ratio": pl.Float64, "mean_span": pl.Float64,
        "lr": pl.Float64, "lr_rule": pl.Boolean, "warmup_frac": pl.Float64, "min_lr_ratio": pl.Float64,
        "schedule": pl.Utf8, "cooldown_frac": pl.Float64,
        "batch_size": pl.Int64, "steps": pl.Int64,
        "weight_decay": pl.Float64, "beta1": pl.Float64, "beta2": pl.Float64, "grad_clip": pl.Float64,
        "precision": pl.Utf8,
        "tokenizer": pl.Utf8, "tokenizer_sha256": pl.Utf8, "data": pl.Utf8, "data_key": pl.Utf8,
    }


@lru_cache(maxsize=256)
def data_identity(shards_dir: str | None) -> tuple[str | None, str | None, str | None]:
    """(tokenizer kind, tokenizer_sha256, data key) of a shard directory, from its meta.json.
    The key hashes what decides the shards' tokens (prepare's config, the corpus hash, the
    tokenizer's hash), not the path: two copies of one directory share it. Nulls where the
    directory is not here (a sweep collected away from its data)."""
    try:
        meta = json.loads((Path(shards_dir) / "meta.json").read_text())
    except (TypeError, OSError, ValueError):
        return None, None, None
    if not isinstance(meta, dict):
        return None, None, None
    # The tokenizer file's hash, as prepare records it (absent in shards made before it did).
    tok_file = meta.get("tokenizer_file") if isinstance(meta.get("tokenizer_file"), dict) else {}
    tok_sha = tok_file.get("sha256")
    ident = {"config": meta.get("config"), "source": (meta.get("source") or {}).get("hash"),
             "tokenizer": meta.get("tokenizer"), "tokenizer_sha256": tok_sha, "vocab_size": meta.get("vocab_size")}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    tok = meta.get("tokenizer")
    return (str(tok) if tok is not None else None), (str(tok_sha) if tok_sha else None), key


def split_tokens(shards_dir: str | None, split: str = "train") -> int | None:
    """Tokens in a split of a shard directory, from its meta.json; None where the directory is
    not here (a cluster's data planned or collected on a laptop) or not named (the embedded
    corpus, not built for this). Read each time, not cached: a notebook may prepare the data
    between two plans."""
    if shards_dir in (None, "", "default"):
        return None
    try:
        return int(json.loads((Path(shards_dir) / "meta.json").read_text())["splits"][split]["n_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _row(s: RunState) -> dict:
    rec = s.record or {}
    e = s.entry
    cfg = rec.get("config") or (e.config if e else {}) or {}
    budget = e.budget if e else (cfg.get("extra") or {}).get("budget")
    done = s.state == RunStatus.COMPLETED
    val = rec.get("val") or {}

    def v(obj: str, key: str):
        x = (val.get(obj) or {}).get(key) if done else None
        return float(x) if x is not None else None

    tokens = rec.get("tokens_seen") if rec.get("tokens_seen") is not None else cfg.get("tokens")
    flops = rec.get("flops")
    if flops is None and tokens is not None and e is not None:
        flops = tokens * e.flops_per_token
    data = rec.get("data") or cfg.get("data")
    split = split_tokens(str(data)) if data else None
    return {
        "run": s.name,
        "params": rec.get("n_params", e.n_params if e else None),
        "params_nonembed": rec.get("n_params_nonembed", e.n_params_nonembed if e else None),
        "tokens": tokens,
        "unique_tokens": (unique_tokens(tokens, split, cfg["seq_len"])
                          if None not in (tokens, split, cfg.get("seq_len")) else None),
        "flops": float(flops) if flops is not None else None,
        "budget": float(budget) if budget is not None else None,
        "loss": v("mixed", "loss"), "loss_denoise": v("denoise", "loss"), "loss_clm": v("clm", "loss"),
        "loss_se": v("mixed", "se"),
        "bpb": v("mixed", "bpb"), "bpb_denoise": v("denoise", "bpb"), "bpb_clm": v("clm", "bpb"),
        "status": s.state,
        "wall_time_s": rec.get("wall_time_s"),
        "device": rec.get("device"),
        "error": s.error,
        # Runs from before the decoder-only family recorded no arch: encoder-decoders.
        "arch": (cfg.get("arch") or "encdec") if cfg else None,
        "vocab_size": (rec.get("model") or {}).get("vocab_size"),
        "seq_len": cfg.get("seq_len"), "noise_density": cfg.get("noise_density"),
        "tied_embeddings": cfg.get("tied_embeddings"),
        **_options(rec, cfg),
        **({k: float(x) for k, x in (rec.get("tasks") or {}).items() if x is not None} if done else {}),
    }


def _options(rec: dict, cfg: dict) -> dict:
    """The run's options beyond its size and tokens: what it was asked for (config) and the
    peak lr it got (the plan's, where the lr rule of N chose it)."""
    data = rec.get("data") or cfg.get("data")
    tok, tok_sha, key = data_identity(str(data) if data else None)
    lr = rec.get("lr") if rec.get("lr") is not None else cfg.get("lr")
    return {
        "sweep": (cfg.get("extra") or {}).get("sweep"), "seed": cfg.get("seed"),
        "clm_ratio": cfg.get("clm_ratio"), "mean_span": cfg.get("mean_span"),
        "lr": lr, "lr_rule": cfg.get("lr") is None if cfg else None,
        "warmup_frac": cfg.get("warmup_frac"), "min_lr_ratio": cfg.get("min_lr_ratio"),
        # Records from before WSD existed trained with cosine; a cosine run has no cooldown.
        "schedule": cfg.get("schedule", "cosine") if cfg else None,
        "cooldown_frac": cfg.get("cooldown_frac") if cfg.get("schedule") == "wsd" else None,
        "batch_size": cfg.get("batch_size"), "steps": rec.get("steps"),
        "weight_decay": cfg.get("weight_decay"), "beta1": cfg.get("beta1"), "beta2": cfg.get("beta2"),
        "grad_clip": cfg.get("grad_clip"), "precision": rec.get("precision") or cfg.get("precision"),
        "tokenizer": tok, "tokenizer_sha256": tok_sha, "data": str(data) if data else None, "data_key": key,
    }


def results_table(states: list[RunState]):
    import polars as pl

    rows = [_row(s) for s in states]
    tasks = sorted({k for r in rows for k in r if k.startswith(TASK_PREFIX)})
    schema = {**_schema(), **{k: pl.Float64 for k in tasks}}
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row")


def curves_table(dir: Path, results, problems: list[str] | None = None) -> "object":
    """Validation rows of every completed run's metrics.parquet, read in one parallel scan.

    An unreadable metrics table leaves that run's curve out (its final loss, from run.json,
    stays in the results) and is named, with its path, in `problems`: one damaged file must
    not stop the collection of every other run. A missing one is refused: the run directory
    is incomplete (a copy in progress?), not damaged."""
    import polars as pl

    problems = [] if problems is None else problems
    done = results.filter(pl.col("status") == RunStatus.COMPLETED.value)
    tasks = [c for c in results.columns if c.startswith(TASK_PREFIX)]
    schema = {"run": pl.Utf8, "params": pl.Int64, "tokens": pl.Int64, "flops": pl.Float64, "loss": pl.Float64,
              **{c: pl.Float64 for c in tasks}}
    runs = {str(_run_dir(dir, name) / METRICS): (name, params) for name, params in zip(done["run"], done["params"])}
    missing = [p for p in runs if not Path(p).exists()]
    if missing:
        raise UserError(f"{missing[0]}: completed run has no metrics table ({len(missing)} such runs)")
    if not runs:
        return pl.DataFrame(schema=schema)

    def scan(paths):
        # The tasks' columns differ between runs: the scan is then given them, null where absent.
        given = dict(schema={"split": pl.Utf8, "tokens": pl.Int64, "flops": pl.Float64, "val_loss": pl.Float64,
                             **{c: pl.Float64 for c in tasks}}, extra_columns="ignore") if tasks else {}
        lf = pl.scan_parquet(paths, include_file_paths="_path", missing_columns="insert", **given)
        return (lf.filter(pl.col("split") == "val")
                  .select("_path", pl.col("tokens").cast(pl.Int64), pl.col("flops").cast(pl.Float64),
                          pl.col("val_loss").cast(pl.Float64).alias("loss"), *tasks)
                  .collect())

    try:
        val = scan(list(runs))
    except (pl.exceptions.PolarsError, OSError):
        # Some file is damaged: read them one by one to name it, and keep the others.
        parts = []
        for p in list(runs):
            try:
                parts.append(scan([p]))
            except (pl.exceptions.PolarsError, OSError) as e:
                problems.append(f"{p}: metrics table is unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                f"its curve is left out of {CURVES}")
                del runs[p]
        val = pl.concat(parts) if parts else None
        if val is None:
            return pl.DataFrame(schema=schema)
    names = pl.DataFrame({"_path": list(runs), "run": [v[0] for v in runs.values()],
                          "params": [v[1] for v in runs.values()]},
                         schema={"_path": pl.Utf8, "run": pl.Utf8, "params": pl.Int64})
    out = (val.join(names, on="_path", how="left")
              .select("run", "params", "tokens", "flops", "loss", *tasks)
              .sort("run", "tokens"))
    return out.cast(schema)


def _run_dir(dir: Path, name: str) -> Path:
    p = Path(dir) / "runs" / name
    return p if p.exists() else Path(dir) / name


def collect(dir: str | Path, problems: list[str] | None = None) -> tuple[object, object, list[RunState]]:
    """Write DIR/results.parquet and DIR/curves.parquet; returns (results, curves, states).
    Damaged files of single runs are named in `problems` (runs with a corrupt run.json are
    in the results with status "corrupt"), and the rest is collected."""
    dir = Path(dir)
    data_identity.cache_clear()   # shards may have been re-prepared since the last collect
    states = sweep_states(dir)
    results = results_table(states)
    curves = curves_table(dir, results, problems)
    write_parquet_atomic(results, dir / RESULTS)
    write_parquet_atomic(curves, dir / CURVES)
    return results, curves, states
