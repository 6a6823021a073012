"""Reading a table of runs (and loss curves) for fitting: a CSV or parquet file, or a table
already in memory (a polars or pandas DataFrame, or anything with `__arrow_c_stream__` or
`__dataframe__`).

Canonical column names are those `scaling sweep collect` writes; a column mapping names others,
given one way at every entry (`load_runs`, `scaling.fit`, `scaling.report.load`, the CLI's
`--columns`): a dict `{"params": "Model Size", "flops": "Training FLOP"}` or the same as a
string, `"params=Model Size,flops=Training FLOP"` (`column_mapping` reads both). Tokens missing
but FLOPs present: D = C / (6 N), as the Chinchilla paper defines its FLOPs, with a warning
(for this lab's encoder-decoder runs, 6ND is NOT their compute).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from scaling.base.errors import UserError

COLUMNS = ("params", "tokens", "loss", "flops", "budget", "unique_tokens", "run", "loss_se")
# The model a run trained, as `scaling sweep collect` writes it: kept as they are, so that the
# fit counts the runs' compute by their shapes (scaling/fit/compute.py): a decoder-only table
# (arch) by the decoder's, whose sequence depends on clm_ratio (scaling.base.shapes.run_lengths).
SHAPE_COLUMNS = ("vocab_size", "seq_len", "noise_density", "tied_embeddings", "arch", "clm_ratio")
REQUIRED = ("params", "tokens", "loss")
CURVE_COLUMNS = ("run", "tokens", "flops", "loss")
CURVES_FILE = "curves.parquet"
# Before the denoising decoder learns to copy, its loss tracks CLM within ~0.15 nats; after,
# it falls 0.5-1 nats below (measured on the demo's sizes, see sweeps/demo-cpu.toml).
COPY_GAP = 0.3


@dataclass
class RunTable:
    """Runs with canonical numeric columns params, tokens, loss, flops (always present here),
    optionally budget, unique_tokens and loss_se, run (a string id), and the runs' shape
    (SHAPE_COLUMNS) where the table has it."""

    df: pl.DataFrame
    source: str
    params_column: str                 # which source column gave N (total vs non-embedding)
    flops_from_6nd: bool = False       # flops were filled as 6 N D
    warnings: list = field(default_factory=list)
    dropped: int = 0
    hint: str | None = None            # a word for the user on how N was read, printed by the CLI

    def col(self, name: str) -> np.ndarray:
        """Column `name` as a float array."""
        return self.df[name].to_numpy().astype(float)

    def has(self, name: str) -> bool:
        """Whether the table has column `name` (budget, unique_tokens, loss_se are optional)."""
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


def column_mapping(columns: Mapping[str, str] | str | None) -> dict[str, str]:
    """A column mapping as a dict {name: column}, from a dict or the CLI's string
    ("params=Model Size,flops=Training FLOP"); names are checked against COLUMNS. A dict given
    the wrong way round ({"Model Size": "params"}) is refused with the right way shown."""
    if columns is None or isinstance(columns, str):
        return parse_columns(columns)
    if not isinstance(columns, Mapping):
        raise UserError(f"columns: expected a dict {{name: column}} or 'name=column,...', got {type(columns).__name__}")
    out = {}
    for key, col in columns.items():
        if key not in COLUMNS:
            if col in COLUMNS:
                raise UserError(f"columns: {key!r} is not one of the names ({', '.join(COLUMNS)}); a mapping goes "
                                f"name -> column: {{{col!r}: {key!r}}}")
            raise UserError(f"columns: unknown name {key!r}; expected one of {', '.join(COLUMNS)}")
        if not isinstance(col, str):
            raise UserError(f"columns: {key} -> {col!r}: a column is named by a string")
        out[key] = col
    return out


def as_frame(data) -> tuple[pl.DataFrame, str]:
    """A table of runs as a polars DataFrame and a name for it in messages: a path (CSV,
    parquet), a polars DataFrame or LazyFrame, a pandas DataFrame, anything with
    `__arrow_c_stream__` (pyarrow, DuckDB, ...) or `__dataframe__`, or a dict of columns."""
    if isinstance(data, (str, Path)):
        return read_any(data), str(data)
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if isinstance(data, pl.DataFrame):
        return data, "a polars DataFrame"
    kind = type(data).__module__.split(".")[0]
    try:
        if kind == "pandas":
            df = pl.from_pandas(data)
        elif hasattr(data, "__arrow_c_stream__"):
            df = pl.DataFrame(data)
        elif hasattr(data, "__dataframe__"):
            df = _from_interchange(data)
        elif isinstance(data, Mapping):
            df = pl.DataFrame(dict(data))
        else:
            raise UserError(f"expected a path (.csv, .parquet) or a DataFrame (polars, pandas, or one with "
                            f"__arrow_c_stream__ or __dataframe__), got {type(data).__name__}")
    except UserError:
        raise
    except Exception as e:  # the converters raise several types for a table they cannot read
        raise UserError(f"cannot read the {type(data).__name__} as a table ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0]})") from None
    return df, f"a {kind} {type(data).__name__}"


def _from_interchange(data) -> pl.DataFrame:
    """A table known only by the dataframe interchange protocol (`__dataframe__`): polars 1
    reads it; polars 2 reads only the Arrow PyCapsule, so pyarrow's interchange reader does,
    where pyarrow is installed."""
    try:
        return pl.from_dataframe(data)
    except TypeError:
        try:
            from pyarrow.interchange import from_dataframe   # here: optional, and only for such a table
        except ImportError:
            raise UserError(f"a {type(data).__name__} offers only __dataframe__, which this polars no longer reads: "
                            "install pyarrow, or pass a polars or pandas DataFrame (or one with "
                            "__arrow_c_stream__)") from None
        return pl.from_arrow(from_dataframe(data))


def read_any(path: str | Path) -> pl.DataFrame:
    """A .parquet, .csv, .tsv or .txt table as a DataFrame ('#' lines of a CSV are comments); a
    missing, unreadable or unknown file is a UserError naming it."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        raise UserError(f"{p}: a folder without results.parquet (or OLMo ladder runs); for a sweep, run "
                        f"`scaling sweep collect {p}` first, or give a .parquet or .csv table")
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


# A count of parameters, tokens or FLOPs below this in every run is a count in other units
# (millions, billions): no model is fitted on runs of under a thousand parameters or tokens.
MIN_COUNT = 1e3
# The median run's tokens per parameter outside this range: one of the two is in other units
# (tokens in billions beside parameters as counts gives ~1e-8; parameters in billions beside
# tokens as counts ~1e10). Wide on purpose: an IsoFLOP sweep's small models at a large budget
# train on 1e7 tokens per parameter (tests/test_fit_cli.py's off-centre sweep).
TOKENS_PER_PARAM = (1e-3, 1e9)


def _check_units(df: pl.DataFrame, mapping: dict[str, str], where: str) -> None:
    """One clear error for counts given in other units: params, tokens or flops all below a
    thousand, or tokens and params a thousand-fold or more out of step with each other."""
    for k in ("params", "tokens", "flops", "unique_tokens"):
        if k in df.columns and df.height and float(df[k].max()) < MIN_COUNT:
            raise UserError(
                f"{where}: column {mapping[k]!r} ({k}): every value is below {MIN_COUNT:,.0f} (the largest is "
                f"{float(df[k].max()):g}): {k} must be a plain count, not millions or billions (multiply the column "
                f"first, e.g. by 1e6 or 1e9)")
    if df.height and "params" in df.columns and "tokens" in df.columns:
        ratio = float((df["tokens"] / df["params"]).median())
        lo, hi = TOKENS_PER_PARAM
        if not lo <= ratio <= hi:
            raise UserError(
                f"{where}: columns {mapping['tokens']!r} (tokens) and {mapping['params']!r} (params) disagree in "
                f"units: the median run trains on {ratio:.3g} tokens per parameter (expected {lo:g} to {hi:g}); give "
                "both as plain counts")


def _refuse_invalid(df: pl.DataFrame, mapping: dict[str, str], where: str, columns: list[str]) -> None:
    """invalid="raise": one error naming each column with missing, NaN, infinite or
    non-positive values among the runs kept, and the first such runs."""
    bad = []
    for c in columns:
        ok = pl.col(c).is_not_null() & pl.col(c).is_finite() & (pl.col(c) > 0)
        rows = df.with_row_index("_row").filter(~ok.fill_null(False))
        if rows.height:
            ids = ", ".join(str(r) for r in rows["run" if "run" in rows.columns else "_row"].head(5).to_list())
            bad.append(f"column {mapping[c]!r} ({c}) has {rows.height} missing, NaN, infinite or non-positive "
                       f"value(s) (run{'s' if rows.height > 1 else ''} {ids}{', ...' if rows.height > 5 else ''})")
    if bad:
        raise UserError(f"{where}: " + "; ".join(bad) + ": drop those rows first, or pass invalid='drop' to leave "
                        "them out with a warning")


INVALID = ("drop", "raise")


def _mapping_hint(missing: str, from_file: bool) -> str:
    return (f"map it with --columns {missing}=COLUMN" if from_file else "") + (" or " if from_file else "map it with ") \
        + f"columns={{'{missing}': COLUMN}}"


def _canonical(raw: pl.DataFrame, columns: dict, mapping: dict, path: str, from_file: bool,
               warnings: list) -> pl.DataFrame:
    """The table's columns under their canonical names (numeric, run ids as strings), each
    mapped column checked to exist and every required one to be there."""
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
            f"({_mapping_hint(missing[0], from_file)})")
    cols = {}
    for k, src in have.items():
        cols[k] = raw[src].cast(pl.Utf8) if k == "run" else _numeric(raw, src, k, path)
    for k in SHAPE_COLUMNS:
        if k in raw.columns and k not in cols:
            cols[k] = raw[k]
    if "loss_denoise" in raw.columns and "loss_clm" in raw.columns:
        # This lab's runs: how far denoising has pulled below CLM tells whether the decoder
        # has learned to copy the kept tokens (see COPY_GAP).
        cols["copy_gap"] = (raw["loss_clm"].cast(pl.Float64) - raw["loss_denoise"].cast(pl.Float64))
    df = pl.DataFrame(cols)
    if "run" not in df.columns:
        df = df.with_columns(pl.Series("run", [str(i) for i in range(df.height)]))
    return df


def _known_unique(df: pl.DataFrame, warnings: list) -> pl.DataFrame:
    """unique_tokens where some runs lack it (a sweep collected away from its data): none
    known, the column goes; some, the others are taken as repeating nothing, and said."""
    u = pl.col("unique_tokens")
    missing = int(df.select((u.is_null() | u.cast(pl.Float64).is_nan()).sum()).item())
    if not missing:
        return df
    if missing == df.height:
        return df.drop("unique_tokens")
    warnings.append(f"unique_tokens unknown for {missing} run(s) (their data was not there to count): taken as "
                    "their tokens, no data repeated")
    return df.with_columns(pl.when(u.is_null() | u.cast(pl.Float64).is_nan()).then(pl.col("tokens"))
                           .otherwise(u).alias("unique_tokens"))


def load_runs(data, columns: Mapping[str, str] | str | None = None, *, drop_top_loss: int = 0,
              invalid: str = "drop") -> RunTable:
    """Load and clean a table of runs: `data` is a path (.csv, .parquet) or a DataFrame (see
    `as_frame`), `columns` maps the canonical names to its columns (a dict or "name=column,...",
    see `column_mapping`). Runs whose status is not 'completed' (diverged, failed, running) are
    dropped. Rows with missing, non-positive or non-finite params, tokens, loss (or flops, if
    given) are dropped and counted (invalid="drop", the CLI's way), or are one UserError naming
    the column (invalid="raise", `scaling.fit`'s default). Counts in other units (params or
    tokens all below a thousand, or tokens per parameter far out of range) are a UserError
    naming the column."""
    if invalid not in INVALID:
        raise UserError(f"invalid={invalid!r}: expected one of {', '.join(map(repr, INVALID))}")
    columns = column_mapping(columns)
    raw, path = as_frame(data)
    warnings: list[str] = []
    mapping = {k: columns.get(k, k) for k in COLUMNS}
    df = _canonical(raw, columns, mapping, path, isinstance(data, (str, Path)), warnings)
    n_raw = raw.height
    if "status" in raw.columns:
        ok = (raw["status"].cast(pl.Utf8) == "completed").fill_null(False)
        n_bad = int((~ok).sum())
        if n_bad:
            warnings.append(f"dropped {n_bad} run(s) whose status is not 'completed'")
        df = df.filter(ok)
    numeric = [c for c in ("params", "tokens", "loss", "flops") if c in df.columns]
    if invalid == "raise":
        _refuse_invalid(df, mapping, path, numeric)
    if "tokens" not in df.columns:
        df = df.with_columns((pl.col("flops") / (6.0 * pl.col("params"))).alias("tokens"))
        numeric.append("tokens")
    if "unique_tokens" in df.columns:
        df = _known_unique(df, warnings)
    if "loss_se" in df.columns:   # a run without its validation noise adds none to the bootstrap
        df = df.with_columns(pl.col("loss_se").fill_null(0.0).fill_nan(0.0).clip(lower_bound=0.0))
    good = pl.lit(True)
    for c in numeric:
        good = good & pl.col(c).is_not_null() & pl.col(c).is_finite() & (pl.col(c) > 0)
    before = df.height
    df = df.filter(good)
    dropped = before - df.height
    if dropped:
        warnings.append(f"dropped {dropped} row(s) with missing, non-positive or non-finite values")
    _check_units(df, mapping, path)
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
    return RunTable(df=df, source=path, params_column=mapping["params"],
                    flops_from_6nd=flops_from_6nd, warnings=warnings, dropped=dropped, hint=hint)


def find_curves(results_path: str | Path, curves: str | Path | None) -> Path | None:
    """--curves FILE, else curves.parquet beside the results file, else None."""
    if curves:
        return Path(curves)
    beside = Path(results_path).parent / CURVES_FILE
    return beside if beside.exists() else None


def load_curves(data, runs: RunTable) -> pl.DataFrame:
    """Loss curves (run, tokens, flops, loss) from a path or a DataFrame (as `load_runs` takes
    them), joined with each run's params. Curves of runs that are not in the (cleaned) runs
    table are left out."""
    raw, path = as_frame(data)
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
