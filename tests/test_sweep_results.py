"""results.parquet says what its runs are: two real sweeps that differ only in their
objective mix stack into one table and group by it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest

from scaling.cli import main
from sweep_files import QUICK_VAL, write_sweep_file


@pytest.fixture
def tmp_path():
    d = Path(tempfile.mkdtemp(prefix="scaling-results-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_sweep(tmp_path: Path, shards: Path, name: str, clm_ratio: float) -> pl.DataFrame:
    f = write_sweep_file(tmp_path / f"{name}.toml", shards, name=name, kind="isoflop",
                         train=QUICK_VAL + f"clm_ratio = {clm_ratio}\nlr = 0.003\n", body="""
                             [isoflop]
                             budgets = [3e9]
                             sizes = ["100K", "150K"]
                         """)
    out = tmp_path / name
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out)]) == 0
    assert main(["sweep", "collect", str(out)]) == 0
    return pl.read_parquet(out / "results.parquet")


def test_two_sweeps_stack_and_group_by_their_objective_mix(tmp_path, shards):
    a = run_sweep(tmp_path, shards, "mix", 0.2)
    b = run_sweep(tmp_path, shards, "clm", 1.0)
    for col in ("sweep", "clm_ratio", "noise_density", "mean_span", "lr", "lr_rule", "warmup_frac",
                "min_lr_ratio", "seq_len", "batch_size", "beta1", "beta2", "weight_decay", "seed",
                "tokenizer", "vocab_size", "data", "data_key"):
        assert col in a.columns and a[col].null_count() == 0, col
    assert a["tokenizer"].to_list() == ["bytes", "bytes"] and a["vocab_size"].to_list() == [260, 260]
    assert a["lr"].to_list() == [0.003, 0.003] and not a["lr_rule"].any()
    assert a["seq_len"].to_list() == [32, 32] and a["batch_size"].to_list() == [8, 8]
    assert set(a["precision"]) <= {"32-true", "bf16-mixed"} and a["sweep"].to_list() == ["mix", "mix"]

    both = pl.concat([a, b], how="diagonal")
    assert both.height == 4 and both["data_key"].n_unique() == 1   # the same shards
    by = both.group_by("clm_ratio").agg(pl.col("sweep").unique(), pl.len(), pl.col("loss").min()).sort("clm_ratio")
    assert by["clm_ratio"].to_list() == [0.2, 1.0]
    assert by["sweep"].to_list() == [["mix"], ["clm"]] and by["len"].to_list() == [2, 2]
    # A sweep of CLM only scores nothing on denoising: its mixed loss is its CLM loss.
    clm = both.filter(pl.col("clm_ratio") == 1.0)
    assert clm["loss"].to_list() == pytest.approx(clm["loss_clm"].to_list())


def test_the_data_key_names_what_decides_the_tokens_not_the_path(tmp_path):
    """Two copies of one shard directory share a key; another tokenizer file (its sha256 in
    meta.json's tokenizer_file) or another corpus gives another; no meta.json, no key."""
    import json

    from scaling.sweep.collect import data_identity

    meta = {"tokenizer": "hf-json", "vocab_size": 2048, "config": {"vocab_size": 2048},
            "source": {"hash": "c0ffee"}, "tokenizer_file": {"file": "tokenizer.json", "sha256": "ab" * 32}}
    keys = {}
    for name, change in (("a", {}), ("copy", {}), ("other-tok", {"tokenizer_file": {"sha256": "cd" * 32}}),
                         ("other-corpus", {"source": {"hash": "beef"}})):
        d = tmp_path / name
        d.mkdir()
        (d / "meta.json").write_text(json.dumps({**meta, **change}))
        keys[name] = data_identity(str(d))
    assert keys["a"] == keys["copy"] == ("hf-json", "ab" * 32, keys["a"][2])
    assert len({keys[n][2] for n in ("a", "other-tok", "other-corpus")}) == 3
    assert data_identity(str(tmp_path / "absent")) == (None, None, None)


def test_runs_past_their_training_split_are_said_and_counted(tmp_path, shards, capsys):
    """A run whose D exceeds its data's training split (104,205 tokens here) repeats it: plan and
    launch say so before training, collect counts its distinct tokens, and the fit's table has
    them (its repeated-data law reads unique_tokens below tokens)."""
    from scaling.fit.table import load_runs

    f = write_sweep_file(tmp_path / "rep.toml", shards, name="rep", kind="grid", train=QUICK_VAL,
                         body='[grid]\nsizes = ["100K"]\ntokens = ["25.6K", "128K"]\n')
    assert main(["sweep", "plan", str(f)]) == 0
    err = capsys.readouterr().err
    assert "data: 1 of 2 runs see their data more than once (up to 1.2 passes" in err and "104K tokens" in err
    out = tmp_path / "rep"
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out)]) == 0
    assert "see their data more than once" in capsys.readouterr().err
    assert main(["sweep", "collect", str(out)]) == 0
    res = pl.read_parquet(out / "results.parquet").sort("tokens")
    assert res["tokens"].to_list() == [25600, 128000]
    assert res["unique_tokens"].to_list() == [25600, 104192]   # whole windows of 32 of the split
    table = load_runs(out / "results.parquet")
    assert int((table.col("unique_tokens") < table.col("tokens")).sum()) == 1
    # Collected away from its data, a run's unique_tokens is unknown: taken as its tokens, and
    # said; where no run's is known, the column is left out of the fit.
    some = res.with_columns(pl.when(pl.col("tokens") < 30000).then(None).otherwise(pl.col("unique_tokens"))
                            .alias("unique_tokens"))
    t = load_runs(some)
    assert t.col("unique_tokens").tolist() == [25600, 104192]
    assert any("unique_tokens unknown for 1 run(s)" in w for w in t.warnings)
    assert not load_runs(res.with_columns(pl.lit(None, pl.Int64).alias("unique_tokens"))).has("unique_tokens")


def test_a_validation_split_smaller_than_its_examples_is_said_and_counted(tmp_path, shards, capsys):
    """The tiny shards' validation split holds 252 windows of 32 tokens: 512 examples score
    windows twice, plan says so, and the score's standard error counts the distinct windows."""
    import math

    import torch

    from scaling.train.validation import val_scores

    f = write_sweep_file(tmp_path / "val.toml", shards, name="val", kind="grid", train="val_examples = 512\n",
                         body='[grid]\nsizes = ["100K"]\ntokens = ["25.6K"]\n')
    assert main(["sweep", "plan", str(f)]) == 0
    err = capsys.readouterr().err
    assert "validation split holds 252 windows" in err and "fewer than val_examples = 512" in err
    f.write_text(f.read_text().replace("val_examples = 512", "val_examples = 200"))
    assert main(["sweep", "plan", str(f)]) == 0
    assert "validation split" not in capsys.readouterr().err
    # Sums of 512 examples, each task's example means 1 and 3 alternately (sd 1).
    sums = torch.tensor([[512.0 * 2, 512.0, 512.0 * 2, 256.0 * 10]] * 2, dtype=torch.float64)
    free, repeated = val_scores(sums, 512, 0.2, 1.0), val_scores(sums, 512, 0.2, 1.0, windows=252)
    assert free["val_loss"] == repeated["val_loss"]
    assert repeated["val_se"] / free["val_se"] == pytest.approx(math.sqrt(511 / 251))
    assert val_scores(sums, 512, 0.2, 1.0, windows=1000)["val_se"] == free["val_se"]
