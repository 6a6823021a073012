"""The OLMo model ladder's evaluation tables (Bhagia et al. 2024; allenai/OLMo-ladder,
`src/scripts/paper/data/ladder-runs/`) as the lab's results and curves tables.

A ladder folder holds one CSV per run, named SIZE-MxC.csv (190M-1xC.csv: the 190M model at
1 x 20 tokens per parameter), one row per evaluation. `read_ladder(folder)` returns two
polars DataFrames in the lab's columns, as `scaling sweep collect` writes them:

- curves: one row per evaluation: run, params, tokens (throughput/total_tokens), flops (tokens
  x the paper's FLOPs per token of the size), loss (C4's validation loss, nats per token),
  and task.<name>.bpb and task.<name>.acc for each task of the table;
- results: one row per run, the final row, every value the mean of the last `final_mean`
  evaluations (the paper's step 1 averages the last 5: `moving_avg 5` in step1.py), tokens and
  flops those of the last row.

Task names are the CSV's (hellaswag_val, arc_easy_test, ...), plus mmlu_avg_val and
mmlu_avg_test, the paper's weighted mean of the four MMLU subject groups. Accuracy is the
`_len_norm` column where the table has it (the `_acc` one for BoolQ), as the paper's code reads
them. `scaling fit FOLDER` reads a ladder folder through this module.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from scaling.base.errors import UserError

# The paper's parameter counts and FLOPs per token of the ladder's sizes (the folder's
# README; src/scaling/utils.py MODEL_FLOPS). The 1B is the paper's "1.3B".
SIZES = {"190M": (190_354_176, 1.903391232e9), "370M": (371_262_464, 3.443922944e9),
         "760M": (758_220_288, 6.373843968e9), "1B": (1_279_395_840, 1.010907136e10)}
RUN_FILE = re.compile(r"^(?P<size>\d+[MB])-(?P<mult>\d+)xC\.csv$")
TOKENS = "throughput/total_tokens"
LM_LOSS = "eval/c4_en-validation/CrossEntropyLoss"
BPB = re.compile(r"^eval/downstream_bpb/(?P<task>.+)_rc_5shot_bpb$")
# MMLU's subject groups, weighted as the paper's code weighs them (utils.py WEIGHT_BY_KEY).
MMLU_WEIGHTS = {"mmlu_stem": 0.215, "mmlu_humanities": 0.335, "mmlu_social_sciences": 0.219, "mmlu_other": 0.231}
FINAL_MEAN = 5


def is_ladder(path: str | Path) -> bool:
    """Whether `path` is a folder of ladder runs (SIZE-MxC.csv files)."""
    p = Path(path)
    return p.is_dir() and any(RUN_FILE.match(f.name) for f in p.iterdir())


def _accuracy_column(columns: list[str], task: str) -> str | None:
    for suffix in ("len_norm", "acc"):
        c = f"eval/downstream/{task}_rc_5shot_{suffix}"
        if c in columns:
            return c
    return None


def _one_run(path: Path) -> pl.DataFrame:
    m = RUN_FILE.match(path.name)
    size = m["size"]
    if size not in SIZES:
        raise UserError(f"{path}: unknown ladder size {size!r}; known sizes: {', '.join(SIZES)}")
    try:
        raw = pl.read_csv(path, infer_schema_length=10000, comment_prefix="#")
    except Exception as e:   # polars raises several types for a malformed file
        raise UserError(f"{path}: cannot read as CSV ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    for c in (TOKENS,):
        if c not in raw.columns:
            raise UserError(f"{path}: no column {c!r}: not an OLMo ladder table (its README names the columns)")
    n, fpt = SIZES[size]
    cols = {"tokens": pl.col(TOKENS).cast(pl.Float64)}
    if LM_LOSS in raw.columns:
        cols["loss"] = pl.col(LM_LOSS).cast(pl.Float64)
    for c in raw.columns:
        t = BPB.match(c)
        acc = _accuracy_column(raw.columns, t["task"]) if t else None
        if t and acc:
            cols[f"task.{t['task']}.bpb"] = pl.col(c).cast(pl.Float64)
            cols[f"task.{t['task']}.acc"] = pl.col(acc).cast(pl.Float64)
    df = raw.select(**cols).unique("tokens", keep="first", maintain_order=True).sort("tokens")
    for split in ("val", "test"):
        groups = [f"{g}_{split}" for g in MMLU_WEIGHTS]
        if all(f"task.{g}.bpb" in df.columns for g in groups):
            for kind in ("bpb", "acc"):
                df = df.with_columns(pl.sum_horizontal([pl.col(f"task.{g}.{kind}") * w for g, w in
                                                        zip(groups, MMLU_WEIGHTS.values())]).alias(
                    f"task.mmlu_avg_{split}.{kind}"))
    return df.with_columns(pl.lit(path.stem).alias("run"), pl.lit(float(n)).alias("params"),
                           (pl.col("tokens") * fpt).alias("flops"))


def read_ladder(folder: str | Path, final_mean: int = FINAL_MEAN) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(results, curves) of a ladder folder; see the module's docstring."""
    p = Path(folder)
    if not p.is_dir():
        raise UserError(f"{p}: no such folder of ladder runs")
    files = sorted(f for f in p.iterdir() if RUN_FILE.match(f.name))
    if not files:
        raise UserError(f"{p}: no ladder runs in it (files named SIZE-MxC.csv, e.g. 190M-1xC.csv)")
    if final_mean < 1:
        raise UserError(f"final_mean: expected at least 1 evaluation, got {final_mean}")
    runs = [_one_run(f) for f in files]
    common = [c for c in runs[0].columns if all(c in r.columns for r in runs)]
    curves = pl.concat([r.select(common) for r in runs])
    front = ["run", "params", "tokens", "flops"] + (["loss"] if "loss" in common else [])
    curves = curves.select(front + [c for c in common if c not in front])
    means = [c for c in curves.columns if c not in ("run", "params", "tokens", "flops")]
    results = curves.group_by("run", maintain_order=True).agg(
        pl.col("params").last(), pl.col("tokens").last(), pl.col("flops").last(),
        *[pl.col(c).tail(final_mean).mean() for c in means])
    return results.with_columns(pl.lit("completed").alias("status")), curves
