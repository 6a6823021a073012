"""The optional Lightning logger: real tiny runs write their curves into the run directory
(csv, tensorboard) with the rows metrics.parquet holds; one that is not installed is one line."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import polars as pl
import pytest

from scaling.cli import main


def train(shards: Path, out: Path, logger: str, tokens: str = "20K") -> int:
    return main(["train", "--params", "20K", "--tokens", tokens, "--out", str(out), "--data", str(shards),
                 "--seq-len", "32", "--batch-size", "8", "--val-points", "2", "--no-progress", "--logger", logger])


def test_csv_and_tensorboard_loggers_write_into_the_run_directory(shards, tmp_path):
    assert train(shards, tmp_path / "csv", "csv") == 0
    with open(tmp_path / "csv" / "logs" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    metrics = pl.read_parquet(tmp_path / "csv" / "metrics.parquet")
    val = [r for r in rows if r.get("val/loss")]
    train_rows = [r for r in rows if r.get("train/loss")]
    # every validation point and every train row of metrics.parquet, at its step
    assert [int(r["step"]) for r in val] == metrics.filter(pl.col("split") == "val")["step"].to_list()
    assert [int(r["step"]) for r in train_rows] == metrics.filter(pl.col("split") == "train")["step"].to_list()
    assert float(val[-1]["val/loss"]) == pytest.approx(metrics.filter(pl.col("split") == "val")["val_loss"][-1])
    assert (tmp_path / "csv" / "logs" / "csv" / "hparams.yaml").read_text().count("clm_ratio") == 1

    assert train(shards, tmp_path / "tb", "tensorboard") == 0
    events = list((tmp_path / "tb" / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


@pytest.mark.parametrize("kind", ["wandb", "mlflow"])
def test_a_logger_that_is_not_installed_is_one_line(shards, tmp_path, capsys, kind):
    if importlib.util.find_spec(kind) is not None:
        pytest.skip(f"{kind} is installed here")
    assert train(shards, tmp_path / kind, kind) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--logger {kind}: the {kind} package is not installed" in err, err
    assert not (tmp_path / kind).exists()
