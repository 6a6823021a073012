"""The decoder-only family beside the encoder-decoder (issue 25, items 1-2): the size rule's
decoder-only shapes with exact parameter and FLOP counts (FlopCounterMode), `token_losses` on
the encoder-decoder's examples, both architectures trained on tiny budgets and counted exactly,
one yardstick (the same validation targets), a killed decoder run resumed to the same digest,
load / score / generate of a kept decoder, sweeps and results with `arch`, and the refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import scaling
from scaling.base.config import TrainConfig, parse_count
from scaling.base.errors import UserError
from scaling.base.flops import FlopCount, parse_flop_count
from scaling.base.shapes import model_config
from scaling.cli import main
from scaling.data.objectives import MixedObjective
from scaling.data.shards import TokenShards
from scaling.fit import compute
from scaling.fit.table import load_runs
from scaling.sweep.spec import load_sweep
from scaling.base.config import read_toml
from scaling.train.model import IGNORE_INDEX, DecoderOnly, build_model
from scaling.train.run import train_run
from scaling.train.validation import val_objective
from scaling.use.score import score_texts

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent

# Long enough (195 steps) for a kill to land mid-run; small enough to take a few seconds. A
# quarter of the default validation examples: scoring them would cost as much as the training.
SETTINGS = dict(params="60K", seq_len=32, batch_size=8, val_points=2, val_examples=128, progress=False)
TOKENS = {"encdec": 20_480, "decoder": 49_920}


def _config(arch: str, shards, out: Path, **extra) -> dict:
    return dict(SETTINGS, arch=arch, tokens=TOKENS[arch], data=str(shards), out=str(out), **extra)


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arch")
    out = {arch: root / arch for arch in TOKENS}
    for arch in TOKENS:
        assert train_run(TrainConfig(**_config(arch, shards, out[arch])))["status"] == "completed"
    return out


def _rec(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


# ----------------------------------------------------------------------------- the shapes
@pytest.mark.parametrize("arch,target,vocab,te,td", [("decoder", "100K", 260, 27, 32), ("decoder", "1M", 8192, 1, 64),
                                                     ("prefix-lm", "300K", 512, 20, 24)])
def test_decoder_counts_are_exact(arch, target, vocab, te, td):
    cfg = model_config(target, vocab, 64, arch=arch)
    assert cfg.n_enc_layers == 0 and cfg.max_len == 128 and 1 / 1.1 <= cfg.n_params() / parse_count(target) <= 1.1
    model = build_model(cfg)
    assert isinstance(model, DecoderOnly)
    assert sum(p.numel() for p in model.parameters()) == cfg.n_params()
    emb = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("tok_emb", "pos", "lm_head")))
    assert sum(p.numel() for p in model.parameters()) - emb == cfg.n_params(embeddings=False)
    enc = torch.randint(4, vocab, (2, te))
    enc[1, te // 2 + 1:] = 0                      # padding: masked, still counted as full matrices
    dec = torch.randint(4, vocab, (2, td))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(enc, dec, dec.clone()).backward()
    assert counter.get_total_flops() == 2 * cfg.train_flops(te, td)


def test_decoder_reads_prefix_then_targets_and_ignores_padding():
    torch.manual_seed(0)
    cfg = model_config("100K", 260, 32, arch="decoder")
    model = build_model(cfg).eval()
    enc, dec = torch.randint(4, 260, (1, 10)), torch.randint(4, 260, (1, 12))
    labels = torch.cat([dec[:, 1:], torch.randint(4, 260, (1, 1))], dim=1)
    base = model.token_losses(enc, dec, labels)
    padded = torch.cat([enc, torch.zeros(1, 5, dtype=torch.long)], dim=1)   # padding between prefix and targets
    assert torch.allclose(model.token_losses(padded, dec, labels), base, atol=1e-5)
    # Causal: a later decoder input changes nothing before it.
    later = dec.clone()
    later[0, 8] = 7 if int(dec[0, 8]) != 7 else 8
    assert torch.allclose(model.token_losses(enc, later, labels)[0, :8], base[0, :8], atol=1e-6)
    assert not torch.allclose(model.token_losses(enc, later, labels)[0, 8:], base[0, 8:], atol=1e-6)
    unlabelled = labels.clone()
    unlabelled[0, 6:] = IGNORE_INDEX
    assert float(model.token_losses(enc, dec, unlabelled)[0, 6:].detach().abs().sum()) == 0.0
    # A prefix LM, the same weights: the prefix read both ways changes the scores; no prefix, nothing.
    prefix = build_model(model_config("100K", 260, 32, arch="prefix-lm")).eval()
    prefix.load_state_dict(model.state_dict())
    assert not torch.allclose(prefix.token_losses(enc, dec, labels), base, atol=1e-4)
    assert torch.allclose(prefix.token_losses(enc[:, :1], dec, labels), model.token_losses(enc[:, :1], dec, labels),
                          atol=1e-6)


@pytest.mark.parametrize("arch", ["decoder", "prefix-lm"])
def test_kv_cache_gives_the_full_pass_logits(arch):
    torch.manual_seed(1)
    model = build_model(model_config("100K", 260, 32, arch=arch)).eval()
    prompt, cont = torch.randint(4, 260, (1, 9)), torch.randint(4, 260, (1, 11))
    full = model.logits(prompt, torch.cat([torch.zeros(1, 1, dtype=torch.long), cont], dim=1))
    cache = model.new_cache()
    with torch.no_grad():
        steps = [model.decode(prompt, cache)[:, -1:]] + [model.decode(cont[:, i:i + 1], cache) for i in range(4)]
        steps.append(model.decode(cont[:, 4:], cache))
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-4)


# ----------------------------------------------------------------------------- the runs
@pytest.mark.parametrize("arch", ["encdec", "decoder"])
def test_both_architectures_train_with_exact_counts(runs, shards, arch):
    rec = _rec(runs[arch])
    assert rec["status"] == "completed" and rec["config"]["arch"] == arch
    assert rec["config"]["clm_ratio"] == (1.0 if arch == "decoder" else 0.2)   # each arch's default objective
    kept = scaling.load_run(runs[arch])
    assert kept.config.arch == arch and isinstance(kept.model, DecoderOnly) == (arch == "decoder")
    assert sum(p.numel() for p in kept.model.parameters()) == rec["n_params"] == kept.config.n_params()
    # One training batch of the run, counted by torch: the FLOPs per token run.json bills.
    train = TokenShards.open(shards, "train")
    b = MixedObjective(train.tokens, train.doc_starts, kept.objective, 0).batch(np.arange(8))
    b = {k: torch.from_numpy(v) for k, v in b.items()}
    assert b["enc"].shape[1] == (1 if arch == "decoder" else 27)          # [CLM], then the window
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        kept.model.train()(b["enc"], b["dec"], b["labels"]).backward()
    assert counter.get_total_flops() == pytest.approx(8 * 32 * rec["flops_per_token"], rel=1e-9 if arch == "decoder" else 0.01)
    # Every token of a whole window is a target (the decoder's CLM); the scores fell.
    if arch == "decoder":
        assert int((b["labels"] != IGNORE_INDEX).sum()) == 8 * 32
    m = pl.read_parquet(runs[arch] / "metrics.parquet").filter(pl.col("split") == "val").sort("step")
    assert m["val_bpb_clm"][-1] < 0.8 * m["val_bpb_clm"][0]
    assert rec["val"]["mixed"]["loss"] == pytest.approx(rec["val"]["clm" if arch == "decoder" else "mixed"]["loss"])
    assert kept.validate()["val_loss_clm"] == pytest.approx(rec["val"]["clm"]["loss"], rel=1e-4)


def test_one_yardstick_the_same_targets_for_every_arch(runs, shards):
    """Validation scores the objective's own examples, whatever the run trained on: the decoder
    (trained on whole windows) and the encoder-decoder are scored on the same target tokens."""
    objs = {a: val_objective(str(shards), scaling.load_run(runs[a]).objective)[0] for a in runs}
    for task in ("denoise", "clm"):
        a, b = (objs[x].batch(np.arange(64), force=task) for x in ("encdec", "decoder"))
        assert np.array_equal(a["labels"], b["labels"]) and np.array_equal(a["enc"], b["enc"])
    assert {k for k in _rec(runs["decoder"])["val"]} == {"mixed", "denoise", "clm"}


def test_a_killed_decoder_run_resumes_to_the_same_digest(runs, shards, tmp_path):
    out = tmp_path / "killed"
    cfg = _config("decoder", shards, out, checkpoint_every_s=0.1)
    code = "import json, sys; from scaling.train.run import train_run; from scaling.base.config import TrainConfig; " \
           "train_run(TrainConfig(**json.loads(sys.argv[1])))"
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt, deadline = out / "checkpoints" / "last.ckpt", time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _rec(out)["status"] == "running"
    assert train_run(TrainConfig(**cfg))["status"] == "completed"
    resumed, ref = _rec(out), _rec(runs["decoder"])
    assert resumed["restarts"] == 1 and resumed["steps"] == ref["steps"] == 195
    assert resumed["data_digest"] == ref["data_digest"] and resumed["tokens_seen"] == ref["tokens_seen"]


def test_a_kept_decoder_scores_and_generates(runs, capsys):
    kept = scaling.load_run(runs["decoder"])
    text = "The default is None, and the value is returned."
    row = score_texts(kept, [text]).rows()[-1]
    assert 0 < row["bpb_clm"] < 8 and row["scored_clm"] > 0
    assert main(["generate", str(runs["decoder"]), "--prompt", "The value", "--max-tokens", "8"]) == 0
    assert main(["generate", str(runs["decoder"]), "--mode", "denoise", "--prompt", "The [...] is returned"]) == 0
    capsys.readouterr()
    from scaling.use.export import to_hf
    with pytest.raises(UserError, match="decoder run: export writes encoder-decoders"):
        to_hf(kept)


# ----------------------------------------------------------------------------- sweeps, results, refusals
def test_the_shipped_decoder_sweep_spends_the_demos_compute():
    dec, ref = load_sweep(ROOT / "sweeps/demo-decoder.toml"), read_toml(ROOT / "sweeps/demo-cpu.toml")
    assert {r.budget for r in dec.runs} == set(ref["isoflop"]["budgets"])
    assert {k: v for k, v in ref["isoflop"].items()} == read_toml(ROOT / "sweeps/demo-decoder.toml")["isoflop"]
    for r in dec.runs:
        c = r.config
        assert (c.arch, c.clm_ratio, c.seq_len, c.lr) == ("decoder", 1.0, 32, 1.5e-3)
        m = model_config(c.params, 260, 32, arch="decoder")
        assert r.n_params == m.n_params() and r.flops_per_token == m.flops_per_token(32, 0.15, 1.0)
        assert r.flops == pytest.approx(r.budget, rel=0.05)
    # the same [train] settings but the recipe
    assert {k: v for k, v in read_toml(ROOT / "sweeps/demo-decoder.toml")["train"].items() if k != "arch"} == ref["train"]


def test_a_decoder_table_is_counted_by_decoder_shapes():
    rows = []
    for target in np.geomspace(2e4, 4e5, 6):
        m = model_config(int(target), 260, 32, arch="decoder")
        for c in (1e11, 1e12):
            rows.append({"run": f"{c:.0e}-{target:.0f}", "params": float(m.n_params()), "tokens": c / m.flops_per_token(32, 0.15, 1.0),
                         "loss": 1.0, "flops": c, "vocab_size": 260, "seq_len": 32, "noise_density": 0.15,
                         "tied_embeddings": True, "arch": "decoder", "clm_ratio": 1.0})
    # as `scaling fit` reads a results table: arch and clm_ratio kept beside the shape's columns
    count, rec, _ = compute.count_for_table(load_runs(pl.DataFrame(rows)))
    assert (count.kind, count.clm_window, rec["kind"]) == ("decoder", True, "decoder")
    assert rec["max_deviation"] < 0.03
    assert FlopCount.from_dict(json.loads(json.dumps(count.to_dict()))) == count
    assert parse_flop_count("decoder:vocab=260,seq_len=32,window") == FlopCount("decoder", 32, 0.15, 260, clm_window=True)


def test_arch_refusals_and_defaults(tmp_path, capsys, shards):
    assert TrainConfig().clm_ratio == 0.2 and TrainConfig(arch="decoder").clm_ratio == 1.0
    assert TrainConfig(arch="decoder", clm_ratio=0.5).clm_ratio == 0.5
    with pytest.raises(UserError, match="arch must be one of encdec, decoder, prefix-lm, got 'gpt'"):
        TrainConfig(arch="gpt")
    out = tmp_path / "never"
    assert main(["train", "--params", "60K", "--tokens", "20K", "--arch", "gpt", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --arch must be one of encdec, decoder, prefix-lm, got 'gpt'"] and not out.exists()
    from sweep_files import write_sweep_file
    path = write_sweep_file(tmp_path / "bad.toml", shards, name="bad", kind="grid", train='arch = "gpt"',
                            body='[grid]\nsizes = ["60K"]\ntokens = ["20K"]')
    assert main(["sweep", "plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.arch must be one of encdec, decoder, prefix-lm" in err and len(err.strip().splitlines()) == 1
