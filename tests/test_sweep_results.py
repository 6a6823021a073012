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
