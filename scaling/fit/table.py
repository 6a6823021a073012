"""Reading a table of runs (and loss curves) for fitting, from any CSV or parquet.

Canonical column names are those `scaling sweep collect` writes; `--columns` maps others,
e.g. the Chinchilla points: `--columns params="Model Size",flops="Training FLOP"`. Tokens
missing but FLOPs present: D = C / (6 N), as the Chinchilla paper defines its FLOPs, with a
warning (for this lab's encoder-decoder runs, 6ND is NOT their compute).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from scaling.base.errors import UserError

COLUMNS = ("params", "tokens", "loss", "flops", "budget", "unique_tokens", "run", "loss_se")
REQUIRED = ("params", "tokens", "loss")
CURVE_COLUMNS = ("run", "tokens", "flops", "loss")
CURVES_FILE = "curves.parquet"
# Before the denoising decoder learns to copy, its loss tracks CLM within ~0.15 nats; after,
# it falls 0.5-1 nats below (measured on the demo's sizes, see sweeps/demo-cpu.toml).
COPY_GAP = 0.3


@dataclass
class RunTable:
    """Runs with canonical numeric columns params, tokens, loss, flops (always present here),
    optionally budget and unique_tokens, and run (a string id)."""

    df: pl.DataFrame
    source: str
    params_column: str                 # which source column gave N (total vs non-embedding)
    flops_from_6nd: bool = False       # flops were filled as 6 N D
    warnings: list = field(default_factory=list)
    dropped: int = 0
    hint: str | None = None            # a word for the user on how N was read, printed by the CLI

    def col(self, name: str) -> np.ndarray:
        return self.df[name].to_numpy().astype(float)

    def has(self, name: str) -> bool:
        return name in self.df.columns


def parse_columns(spec: str | None) -> dict[str, str]:
    """'params=Model Size,flops=Training FLOP' -> {'params': 'Model Size', 'flops': 'Training FLOP'}."""
    if not spec:
        return {}
    out = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UserError(f"--columns: {part.strip()!r} is not NAME=COLUMN (names: {', '.join(COLUMNS)})")
        key, col = (s.strip() for s in part.split("=", 1))
        if key not in COLUMNS:
            raise UserError(f"--columns: unknown name {key!r}; expected one of {', '.join(COLUMNS)}")
        out[key] = col
    return out


def read_any(path: str | Path) -> pl.DataFrame:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(p)
        if suffix in (".csv", ".tsv", ".txt"):
            # Lines starting with '#' are comments: a shipped table says there where it came from.
            return pl.read_csv(p, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10000,
                               comment_prefix="#")
    except Exception as e:  # polars raises several types for malformed files
        raise UserError(f"{p}: cannot read as {suffix[1:]} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    raise UserError(f"{p}: unknown table format {suffix or '(no suffix)'}; expected .parquet or .csv")


def _numeric(df: pl.DataFrame, src: str, name: str, path) -> pl.Series:
    s = df[src]
    if not s.dtype.is_numeric():
        try:
            s = s.cast(pl.Float64, strict=False)
        except Exception:
            raise UserError(f"{path}: column {src!r} ({name}) is not numeric") from None
    return s.cast(pl.Float64)


def load_runs(path: str | Path, columns: dict[str, str] | None = None, *,
              drop_top_loss: int = 0) -> RunTable:
    """Load and clean a table of runs. Rows with missing, non-positive or non-finite params,
    tokens, loss (or flops, if given) are dropped and counted; runs whose status is not
    'completed' (diverged, failed, running) are dropped too."""
    columns = dict(columns or {})
    raw = read_any(path)
    warnings: list[str] = []
    mapping = {k: columns.get(k, k) for k in COLUMNS}
    present = ", ".join(raw.columns) or "(none)"
    for k, src in columns.items():
        if src not in raw.columns:
            raise UserError(f"{path}: no column {src!r} (mapped to {k}); columns are: {present}")
    have = {k: src for k, src in mapping.items() if src in raw.columns}
    if "tokens" not in have and "flops" in have and "params" in have:
        warnings.append("no tokens column: using D = C / (6 N) from the flops column (Chinchilla's convention)")
    missing = [k for k in REQUIRED if k not in have and not (k == "tokens" and "flops" in have)]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; columns are: {present} "
            f"(map them with --columns {missing[0]}=COLUMN)")
    n_raw = raw.height
    cols = {}
    for k, src in have.items():
        cols[k] = raw[src].cast(pl.Utf8) if k == "run" else _numeric(raw, src, k, path)
    if "loss_denoise" in raw.columns and "loss_clm" in raw.columns:
        # This lab's runs: how far denoising has pulled below CLM tells whether the decoder
        # has learned to copy the kept tokens (see COPY_GAP).
        cols["copy_gap"] = (raw["loss_clm"].cast(pl.Float64) - raw["loss_denoise"].cast(pl.Float64))
    df = pl.DataFrame(cols)
    if "run" not in df.columns:
        df = df.with_columns(pl.Series("run", [str(i) for i in range(df.height)]))
    if "status" in raw.columns:
        ok = (raw["status"].cast(pl.Utf8) == "completed").fill_null(False)
        n_bad = int((~ok).sum())
        if n_bad:
            warnings.append(f"dropped {n_bad} run(s) whose status is not 'completed'")
        df = df.filter(ok)
    if "tokens" not in df.columns:
        df = df.with_columns((pl.col("flops") / (6.0 * pl.col("params"))).alias("tokens"))
    if "loss_se" in df.columns:   # a run without its validation noise adds none to the bootstrap
        df = df.with_columns(pl.col("loss_se").fill_null(0.0).fill_nan(0.0).clip(lower_bound=0.0))
    numeric = [c for c in ("params", "tokens", "loss", "flops") if c in df.columns]
    good = pl.lit(True)
    for c in numeric:
        good = good & pl.col(c).is_not_null() & pl.col(c).is_finite() & (pl.col(c) > 0)
    before = df.height
    df = df.filter(good)
    dropped = before - df.height
    if dropped:
        warnings.append(f"dropped {dropped} row(s) with missing, non-positive or non-finite values")
    flops_from_6nd = "flops" not in df.columns
    if flops_from_6nd:
        df = df.with_columns((6.0 * pl.col("params") * pl.col("tokens")).alias("flops"))
    if drop_top_loss:
        if drop_top_loss >= df.height:
            raise UserError(f"--drop-top-loss {drop_top_loss}: only {df.height} runs in {path}")
        df = df.sort("loss").head(df.height - drop_top_loss)
    if df.height == 0:
        raise UserError(f"{path}: no usable runs ({n_raw} rows read)")
    if "copy_gap" in df.columns:
        copied = int((df["copy_gap"].fill_null(0) > COPY_GAP).sum())
        if 0 < copied < df.height:
            warnings.append(
                f"{copied} of {df.height} runs have learned to copy in denoising (denoise loss more than "
                f"{COPY_GAP} nats below CLM) and the rest have not: the table mixes two regimes of the "
                "objective, and a law across them is not a power law")
    hint = None
    if "params" not in columns and "params_nonembed" in raw.columns:   # N by default, not by choice
        hint = ("N is the total parameter count (column 'params'); this table also has Kaplan's non-embedding "
                "count, which the demo fits: --columns params=params_nonembed")
    return RunTable(df=df, source=str(path), params_column=mapping["params"],
                    flops_from_6nd=flops_from_6nd, warnings=warnings, dropped=dropped, hint=hint)


def find_curves(results_path: str | Path, curves: str | Path | None) -> Path | None:
    """--curves FILE, else curves.parquet beside the results file, else None."""
    if curves:
        return Path(curves)
    beside = Path(results_path).parent / CURVES_FILE
    return beside if beside.exists() else None


def load_curves(path: str | Path, runs: RunTable) -> pl.DataFrame:
    """Loss curves (run, tokens, flops, loss), joined with each run's params. Curves of runs
    that are not in the (cleaned) runs table are left out."""
    raw = read_any(path)
    missing = [c for c in CURVE_COLUMNS if c not in raw.columns and not (c == "flops")]
    if missing:
        raise UserError(f"{path}: curves table lacks column(s) {', '.join(missing)}; "
                        f"expected {', '.join(CURVE_COLUMNS)}")
    df = raw.select([pl.col("run").cast(pl.Utf8)] + [
        pl.col(c).cast(pl.Float64) for c in ("tokens", "flops", "loss") if c in raw.columns])
    df = df.join(runs.df.select("run", "params", pl.col("flops").alias("_f"), pl.col("tokens").alias("_t")),
                 on="run", how="inner")
    if "flops" not in df.columns:
        # Same FLOPs per token as the run's total: a run's compute is linear in its tokens.
        df = df.with_columns((pl.col("_f") / pl.col("_t") * pl.col("tokens")).alias("flops"))
    df = df.drop("_f", "_t")
    good = pl.lit(True)
    for c in ("tokens", "flops", "loss"):
        good = good & pl.col(c).is_not_null() & pl.col(c).is_finite() & (pl.col(c) > 0)
    df = df.filter(good)
    if df.height == 0:
        raise UserError(f"{path}: no curve points match the runs of {runs.source} (by the 'run' column)")
    return df.sort("run", "flops")
