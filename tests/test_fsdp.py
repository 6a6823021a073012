"""Sharded runs (strategy = "fsdp": FSDP2 through Lightning's ModelParallelStrategy) on CPU with
2 gloo processes: the DDP run's losses, data, weights and task scores, from a sharded checkpoint
resumed after a kill -9 onto another number of processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from safetensors.torch import load_file

import scaling
from scaling.base.config import TrainConfig
from scaling.base.errors import UserError
from scaling.cli import main

# 30 steps of a global batch of 16, on the tests' byte-level shards; a sharded run's ranks save
# together at the logging steps (every 10).
RUN = ["--params", "100K", "--tokens", str(16 * 32 * 30), "--seq-len", "32", "--batch-size", "16",
       "--val-points", "2", "--no-progress"]


@pytest.fixture(scope="module")
def args(shards, tmp_path_factory):
    """Both runs score a 3-row task at every point: one chunk, so rank 1 has none of its own
    (a sharded run's ranks must still make as many forward passes, or they wait forever)."""
    task = tmp_path_factory.mktemp("fsdp_task") / "sky.jsonl"
    task.write_text(json.dumps({"prompt": "The sky is", "choices": [" green", " blue", " red"], "label": 1}) + "\n")
    return [*RUN, "--corpus", str(shards), "--eval", str(task)]


def _rec(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _train_losses(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "metrics.parquet").filter(pl.col("split") == "train").sort("step")


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, args):
    out = tmp_path_factory.mktemp("fsdp") / "ddp"
    assert main(["train", *args, "--devices", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory, args):
    """A sharded run of 2 processes (each accumulating its 8 sequences in 2 micro-batches,
    recomputing activations: none of it changes the math), killed with -9 after its first
    checkpoint (one shard per process), then resumed to its end on one process. Returns the
    run directory and what its checkpoint folder held at the kill."""
    out = tmp_path_factory.mktemp("fsdp") / "fsdp"
    cmd = [sys.executable, "-m", "scaling.cli", "train", *args, "--devices", "2", "--strategy", "fsdp",
           "--micro-batch", "4", "--activation-checkpointing", "--checkpoint-every", "0.1", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not (ckpt / "meta.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)    # the supervisor; its workers die with it
    proc.wait()
    assert (ckpt / "meta.pt").exists(), proc.stderr.read().decode()[-3000:]
    held = sorted(p.name for p in ckpt.iterdir())
    killed = _rec(out)
    assert main(["train", *args, "--strategy", "fsdp", "--out", str(out)]) == 0
    return out, held, killed


def test_a_sharded_run_is_resumed_after_kill_9_on_another_number_of_processes(fsdp):
    out, held, killed = fsdp
    assert killed["status"] == "running" and killed["world_size"] == 2
    assert held == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    rec = _rec(out)
    assert rec["status"] == "completed" and rec["restarts"] == 1 and rec["world_size"] == 1
    assert not (out / "checkpoints" / "last.ckpt").exists() and not list((out / "checkpoints").iterdir())


def test_the_sharded_run_trains_the_ddp_run(ddp, fsdp):
    """Losses logged before the kill (2 processes) and after it (1 process) are the DDP run's."""
    out = fsdp[0]
    a, b = _rec(ddp), _rec(out)
    assert b["tokens_seen"] == a["tokens_seen"] == 30 * 16 * 32 and b["data_digest"] == a["data_digest"]
    la, lb = _train_losses(ddp), _train_losses(out)
    assert la["step"].to_list() == lb["step"].to_list() and la["step"][0] == 10   # step 10: before the kill
    for x, y in zip(la["train_loss"], lb["train_loss"]):
        assert y == pytest.approx(x, rel=1e-4)
    assert b["val"]["mixed"]["loss"] == pytest.approx(a["val"]["mixed"]["loss"], rel=1e-4)
    # Task scores at every point: step 0 scored by 2 sharded processes, the later ones by 1.
    va, vb = (pl.read_parquet(d / "metrics.parquet").filter(pl.col("split") == "val").sort("step") for d in (ddp, out))
    assert va["step"].to_list() == vb["step"].to_list() == [0, 15, 30]
    for col in ("task.sky.bpb", "task.sky.bpb_clm"):
        assert vb[col].to_list() == pytest.approx(va[col].to_list(), rel=1e-4) and va[col][0] > 0
    assert vb["task.sky.acc"].to_list() == va["task.sky.acc"].to_list()
    # One run directory like DDP's (and an empty checkpoints/, which a DDP run that checkpointed has too).
    assert sorted(p.name for p in out.iterdir() if p.name != "checkpoints") == sorted(p.name for p in ddp.iterdir())


def test_a_sharded_run_keeps_one_whole_model(ddp, fsdp):
    out = fsdp[0]
    kept = scaling.load_run(out)
    assert kept.validate()["val_loss"] == pytest.approx(_rec(out)["val"]["mixed"]["loss"], rel=1e-6)
    # The DDP run's weights, by name. Per tensor they differ by float noise that AdamW scales
    # up where a gradient is ~0 (a key bias, which softmax ignores); as a whole, by ~1e-5.
    wa, wb = load_file(ddp / "model.safetensors"), load_file(out / "model.safetensors")
    assert wa.keys() == wb.keys() and all(wa[k].shape == wb[k].shape for k in wa)
    diff = sum(float(((wb[k] - wa[k]) ** 2).sum()) for k in wa) ** 0.5
    assert diff < 1e-3 * sum(float((wa[k] ** 2).sum()) for k in wa) ** 0.5


def test_strategy_is_checked_where_it_is_written(fsdp, args, capsys):
    with pytest.raises(UserError, match=r"^sweep.toml: train.strategy must be auto, ddp or fsdp, got 'zero3'$"):
        TrainConfig.build({"strategy": "zero3"}, lambda key: f"sweep.toml: train.{key}")
    with pytest.raises(UserError, match="activation_checkpointing must be true or false"):
        TrainConfig.build({"activation_checkpointing": "yes"})
    # A sharded run's checkpoint is a folder of shards: its directory is not resumed as DDP.
    assert main(["train", *args, "--out", str(fsdp[0])]) == 2
    assert "strategy: 'fsdp' -> None" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["encdec", "decoder"])
def test_every_block_of_either_arch_recomputes_and_gives_the_same_gradient(arch):
    """Activation checkpointing (and FSDP's units) reach every block of both architectures, and
    recomputing changes nothing a step computes."""
    import torch

    from scaling.base.shapes import model_config
    from scaling.train import sharding
    from scaling.train.model import build_model

    cfg = model_config("100K", 260, 32, arch=arch)
    torch.manual_seed(0)
    plain = build_model(cfg)
    recomputed = build_model(cfg)
    recomputed.load_state_dict(plain.state_dict())
    sharding.checkpoint_blocks(recomputed)
    blocks = sharding.blocks(recomputed)
    assert len(blocks) == cfg.n_enc_layers + cfg.n_dec_layers and all(b.recomputes for b in blocks)
    enc, dec = torch.randint(4, 260, (2, 24)), torch.randint(4, 260, (2, 32))
    for m in (plain, recomputed):
        m.token_losses(enc, dec, dec).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
