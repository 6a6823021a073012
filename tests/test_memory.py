"""The memory plan: the count's parts by hand for a small shape, the count against what torch
holds on CPU, the choice of strategy and micro-batch, `sweep plan`'s columns, the refusal of a
run that cannot fit (plan and launch), and the 20B ladder planned with no run left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError
from scaling.base.memory import GB, activation_bytes, choose, memory, usable_bytes
from scaling.base.shapes import ModelConfig
from scaling.cli import main
from scaling.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
# 1 encoder + 1 decoder layer, d 16: N = 9,600 (encoder layer 3,280, decoder layer 4,400,
# final norms 64, embeddings 100 x 16 + 2 x 8 x 16 = 1,856).
SMALL = ModelConfig(vocab_size=100, d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, max_len=8)


def test_state_by_hand():
    assert SMALL.n_params() == 9_600 and SMALL.layer_params() == (3_280, 4_400)   # one count for both
    ddp = memory(SMALL, 2, 6, 8, precision="bf16-mixed", strategy="ddp", world=2)
    assert (ddp.weights, ddp.gradients, ddp.optimizer) == (38_400, 38_400, 76_800)   # 4, 4, 8 bytes x N
    # DDP's buckets (4 N) and autocast's bf16 copies of the matmul weights: body 7,744 + tied head 1,600.
    assert ddp.working == 4 * 9_600 + 2 * (7_744 + 1_600)
    assert memory(SMALL, 2, 6, 8, strategy="ddp", world=1).working == 2 * (7_744 + 1_600)   # no buckets alone
    assert memory(SMALL, 2, 6, 8, precision="32", strategy="ddp", world=1).working == 0
    fsdp = memory(SMALL, 2, 6, 8, precision="bf16-mixed", strategy="fsdp", world=2)
    assert (fsdp.weights, fsdp.gradients, fsdp.optimizer) == (19_200, 19_200, 38_400)  # sharded over 2
    # Two gathered decoder blocks and the root (9,600 - 3,280 - 4,400 = 1,920) in bf16, one
    # block's fp32 gradients.
    assert fsdp.working == 2 * (2 * 4_400 + 1_920) + 4 * 4_400


def test_activations_by_hand():
    # micro 2, encoder 6 and decoder 8 tokens, d 16, vocab 100. fp32: encoder layer 64 d bytes
    # a token (6 x 16 x 64 = 6,144), decoder 80 per decoder token + 8 per encoder token
    # (10,240 + 768); outside: encoder side 768, decoder side 8 x 16 x 8 + 4 x 8 x 100 = 4,224;
    # the loss's transient 8 x 100 x 8 = 6,400 (over backward's working set, 4,608).
    assert activation_bytes(SMALL, 2, 6, 8, mixed=False) == 2 * (6_144 + 11_008 + 768 + 4_224 + 6_400)
    # bf16 autocast: 36 and 46 + 6 d bytes a token; decoder side 6 x 8 x 16 + 3,200.
    assert activation_bytes(SMALL, 2, 6, 8, mixed=True) == 2 * (3_456 + 5_888 + 576 + 768 + 3_968 + 6_400)
    # Checkpointed: every block's fp32 input (4 x 16 x 14 = 896) and the larger of the start of
    # backward (768 + 4,224 + 6,400) and one decoder block recomputed (768 + 11,008 + 4,608).
    assert activation_bytes(SMALL, 2, 6, 8, mixed=False, checkpointing=True) == 2 * (896 + 16_384)


def _saved_bytes(model, batch, mixed: bool) -> int:
    """Bytes of the distinct storages autograd saves for one forward of `batch` (enc, dec,
    labels), parameters apart and, under bf16 autocast, less its copies of the matmul weights
    (which the memory model counts as working copies)."""
    import torch

    cfg = model.cfg
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    casts = 2 * (cfg.n_params(embeddings=False) + cfg.vocab_size * cfg.d_model) if mixed else 0
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            model.token_losses(*batch).sum()
    return sum(v for k, v in seen.items() if k not in params) - casts


@pytest.fixture(scope="module")
def measured():
    """What torch holds for one micro-batch of a 3+2-layer model on CPU: the distinct storages
    autograd saves (parameters and autocast's weight copies apart), and the peak of the
    allocator's total over a forward and backward, with and without checkpointing per block."""
    import torch
    import torch.utils.checkpoint as ckpt
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    from scaling.train.model import EncoderDecoder

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=512, d_model=64, n_heads=4, n_enc_layers=3, n_dec_layers=2, max_len=64)
    model = EncoderDecoder(cfg)
    B, te, td = 4, 54, 64
    enc, dec, lab = (torch.randint(1, 512, (B, t)) for t in (te, td, td))
    # autocast's bf16 copies of the matmul weights: what the memory model counts as working copies
    casts = 2 * (cfg.n_params(embeddings=False) + cfg.vocab_size * cfg.d_model)

    def step(mixed):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            loss = model.token_losses(enc, dec, lab).sum()
        loss.backward()

    def peak(mixed):
        step(mixed)   # gradients allocated before the measurement, as in training
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(mixed)
        events = []

        def walk(nodes):
            for e in nodes:
                if e.tag == _EventType.Allocation:
                    events.append((e.start_time_ns, e.extra_fields.alloc_size, e.extra_fields.total_allocated))
                walk(e.children)

        walk(prof.profiler.kineto_results.experimental_event_tree())
        events.sort()
        return max(t for *_, t in events) - (events[0][2] - events[0][1])

    out = {}
    for mixed in (False, True):
        out[mixed] = _saved_bytes(model, (enc, dec, lab), mixed), peak(mixed) - (casts if mixed else 0)
    # The training state after one AdamW step: parameters, their gradients, the two moments.
    opt = torch.optim.AdamW(model.parameters())
    opt.step()
    tensors = [*model.parameters(), *(p.grad for p in model.parameters()),
               *(t for s in opt.state.values() for t in s.values() if t.dim())]
    out["state"] = sum(t.numel() * t.element_size() for t in tensors)
    for layer in [*model.enc_layers, *model.dec_layers]:
        layer.forward = (lambda f: lambda *a, **k: ckpt.checkpoint(f, *a, use_reentrant=False, **k))(layer.forward)
    out["ckpt"] = peak(False)
    return cfg, (B, te, td), out


@pytest.mark.parametrize("mixed", [False, True])
def test_the_count_matches_torch_on_cpu(measured, mixed):
    from scaling.base import memory as mem

    cfg, (B, te, td), out = measured
    saved, peak = out[mixed]
    enc_layer, dec_layer = mem._layer_bytes(cfg, te, td, mixed)
    enc_side, dec_side, _ = mem._outer_bytes(cfg, te, td, mixed)
    counted = B * (cfg.n_enc_layers * enc_layer + cfg.n_dec_layers * dec_layer + enc_side + dec_side)
    assert counted == pytest.approx(saved, rel=0.03)
    assert activation_bytes(cfg, B, te, td, mixed) == pytest.approx(peak, rel=0.03)


def test_state_matches_torch_on_cpu(measured):
    cfg, _, out = measured
    m = memory(cfg, 1, 8, 8, precision="32", strategy="ddp", world=1)
    assert m.weights + m.gradients + m.optimizer == out["state"] == 16 * cfg.n_params()


def test_checkpointed_count_bounds_torch_on_cpu(measured):
    cfg, (B, te, td), out = measured
    counted = activation_bytes(cfg, B, te, td, mixed=False, checkpointing=True)
    assert out["ckpt"] <= counted <= 1.2 * out["ckpt"]
    assert counted < 0.6 * activation_bytes(cfg, B, te, td, mixed=False)


@pytest.fixture(scope="module")
def measured_decoder():
    """What autograd saves for one micro-batch of a 3-layer decoder-only model on CPU, causal
    ("decoder") and with a bidirectional prefix ("prefix-lm"), fed a 49-token prefix and 64
    decoder tokens, nothing padded: 112 in a row, a multiple of 16, so that the prefix LM's
    mask is the size a GPU pads it to. The causal model on a CPU builds no mask (a GPU does)."""
    import torch

    from scaling.train.model import DecoderOnly

    B, te, td = 4, 49, 64
    out = {}
    for arch in ("decoder", "prefix-lm"):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=512, d_model=64, n_heads=4, n_enc_layers=0, n_dec_layers=3, max_len=128,
                          arch=arch)
        model = DecoderOnly(cfg)
        batch = tuple(torch.randint(1, 512, (B, t)) for t in (te, td, td))
        for mixed in (False, True):
            out[arch, mixed] = cfg, _saved_bytes(model, batch, mixed)
    return (B, te, td), out


@pytest.mark.parametrize("arch", ["decoder", "prefix-lm"])
@pytest.mark.parametrize("mixed", [False, True])
def test_the_decoder_only_count_matches_torch_on_cpu(measured_decoder, arch, mixed):
    """A decoder-only model is counted as what it runs: encoder layers over prefix and decoder
    tokens in a row with their mask's copy, the head over the decoder's places; not as an
    encoder-decoder's halves."""
    from scaling.base import memory as mem

    (B, te, td), out = measured_decoder
    cfg, saved = out[arch, mixed]
    layer, outer, _, _ = mem._decoder_only_bytes(cfg, te, td, mixed)
    cpu_mask = 0 if arch == "decoder" else mem.mask_bytes(te, td, mixed)
    counted = B * (cfg.n_dec_layers * (layer - mem.mask_bytes(te, td, mixed) + cpu_mask) + outer)
    assert counted == pytest.approx(saved, rel=0.03)
    # Counted as an encoder-decoder's decoder layers (cross-attention over the prefix, self-
    # attention over the decoder's tokens alone), as the plan did before, it falls short.
    _, dec_layer = mem._layer_bytes(cfg, te, td, mixed)
    enc_side, dec_side, _ = mem._outer_bytes(cfg, te, td, mixed)
    assert B * (cfg.n_dec_layers * dec_layer + enc_side + dec_side) < 0.85 * saved
    # The mask's copy: T x T in the query's dtype, rows padded to 16; none for [CLM] alone.
    assert mem.mask_bytes(te, td, mixed) == 112 * 112 * (2 if mixed else 4) and mem.mask_bytes(1, td, mixed) == 0
    assert mem.mask_bytes(54, 64, mixed) == 117 * 128 * (2 if mixed else 4)
    assert (activation_bytes(cfg, B, te, td, mixed) - activation_bytes(cfg, B, te, td, mixed, checkpointing=True)
            > 0.3 * activation_bytes(cfg, B, te, td, mixed))


def test_a_decoder_sweep_is_planned_at_its_own_lengths(tmp_path):
    """`sweep plan` places a decoder-only run by the tokens it reads in a row: on the mixed
    objective, prefix and target (a smaller micro-batch than the encoder-decoder's of the same
    size); on causal LM alone, one window (as a GPT: twice the micro-batch of the mix)."""
    def micro(arch, clm):
        f = tmp_path / f"{arch}-{clm}.toml"
        f.write_text(f"""[sweep]\nname = "{arch}"\nkind = "grid"\nvocab_size = 32768\n
[grid]\nsizes = ["1B"]\ntokens = ["20B"]\n
[train]\narch = "{arch}"\nclm_ratio = {clm}\nseq_len = 2048\nbatch_size = 64\n
[executor]\ngpus_per_node = 8\ngpu_mem_gb = 80\n""")
        cfg = load_sweep(f).runs[0].config
        return cfg.micro_batch or cfg.batch_size // 8   # 0: the whole share of the batch

    assert (micro("encdec", 0.2), micro("decoder", 0.2), micro("decoder", 1.0)) == (8, 4, 8)


def test_choice_ddp_then_fsdp_then_none():
    m = ModelConfig.from_params("1B", vocab_size=32768, max_len=1024)
    fit = choose(m, 8, 870, 1024, 80, world=8, micro_batch=8)
    assert (fit.strategy, fit.micro_batch) == ("ddp", 8) and fit.memory.total <= usable_bytes(80)
    smaller = choose(m, 8, 870, 1024, 40, world=8)           # half the memory: a smaller micro-batch
    assert smaller.strategy == "ddp" and smaller.micro_batch < 8
    assert memory(m, smaller.micro_batch * 2, 870, 1024, world=8).total > usable_bytes(40)
    big = ModelConfig.from_params("6B", vocab_size=32768, max_len=1024)
    sharded = choose(big, 8, 870, 1024, 80, world=8)
    assert sharded.strategy == "fsdp" and "ddp needs" in sharded.why
    assert choose(big, 8, 870, 1024, 80, world=8, strategy="ddp") is None
    assert choose(big, 8, 870, 1024, 80, world=1) is None      # one GPU: nothing to shard over
    # DDP would hold 2.9B a sequence or two at a time; FSDP holds the whole share of 8.
    mid = ModelConfig.from_params("2.9B", vocab_size=32768, max_len=1024)
    k = choose(mid, 8, 870, 1024, 80, world=8, strategy="ddp").micro_batch
    pick = choose(mid, 8, 870, 1024, 80, world=8)
    assert k < 4 and (pick.strategy, pick.micro_batch, pick.why) == ("fsdp", 8, f"ddp fits micro-batch {k} only")
    # ...but a micro-batch the file caps below 4 is DDP's to take.
    assert choose(mid, 8, 870, 1024, 80, world=8, micro_batch=1).strategy == "ddp"


def test_config_fields_and_their_limits():
    assert (TrainConfig().strategy, TrainConfig().activation_checkpointing) == ("auto", False)
    with pytest.raises(UserError, match="strategy must be auto, ddp or fsdp, got 'zero'"):
        TrainConfig(strategy="zero")
    with pytest.raises(UserError, match="activation_checkpointing must be true or false"):
        TrainConfig(activation_checkpointing="yes")
    # How the processes hold the model is not what is trained: a run resumes under DDP or with
    # recomputation; a sharded run's checkpoint is a folder of shards, so it resumes sharded only.
    assert TrainConfig(strategy="ddp", activation_checkpointing=True).identity() == TrainConfig().identity()
    assert TrainConfig(strategy="fsdp").identity() != TrainConfig().identity()


def _gpu_sweep(tmp_path, sizes, gpus, extra=""):
    f = tmp_path / "gpu.toml"
    f.write_text(f"""
[sweep]
name = "gpu"
kind = "grid"
out = "out"
vocab_size = 32768
[grid]
sizes = {sizes}
tokens = ["100M"]
[train]
seq_len = 1024
batch_size = 64
micro_batch = 8
precision = "bf16-mixed"
{extra}
[executor]
default = "local"
gpus_per_node = {gpus}
gpu_mem_gb = 80
""")
    return f


def test_plan_shows_memory_and_writes_the_pick(tmp_path, capsys):
    f = _gpu_sweep(tmp_path, '["1B", "6B"]', 8)
    sw = load_sweep(f)
    small, big = sw.runs
    assert (small.config.strategy, big.config.strategy) == ("ddp", "fsdp")   # written into the configs
    assert small.config.micro_batch == 8 and big.placement.choice.micro_batch == big.config.micro_batch
    assert main(["sweep", "plan", str(f)]) == 0
    out = capsys.readouterr().out
    header, row1, row2 = out.splitlines()[:3]
    assert header.split()[-8:] == ["strategy", "micro", "state", "GB", "act", "GB", "(ckpt)", "GB/GPU"]
    m = small.placement.choice.memory
    assert row1.split()[-6:] == ["ddp", "8", f"{m.state / GB:.1f}", f"{m.activations / GB:.1f}",
                                 f"({m.activations_ckpt / GB:.1f})", f"{m.total / GB:.1f}"]
    assert m.state + m.activations == m.total and m.activations_ckpt < m.activations / 3
    assert row2.split()[-5] == str(big.config.micro_batch) and "fsdp" in row2
    assert "planned for 80 GB GPUs" in out and "1 run(s) sharded with FSDP, from 6" in out
    # --json: the pick; one GPU reports ddp (its config keeps "auto": nothing to write).
    one = _gpu_sweep(tmp_path, '["1B"]', 1)
    assert main(["sweep", "plan", str(one), "--json"]) == 0
    import json

    run = json.loads(capsys.readouterr().out.splitlines()[0])
    assert (run["strategy"], run["gpus"], run["micro_batch"]) == ("ddp", 1, load_sweep(one).runs[0].config.micro_batch)


def test_a_run_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, capsys):
    f = _gpu_sweep(tmp_path, '["1B", "20B"]', 1)
    with pytest.raises(UserError, match=r"run N20B-\S+ \(18.2B parameters\) does not fit its 80 GB GPUs: at the least "):
        load_sweep(f)
    assert main(["sweep", "launch", str(f), "--dry-run"]) == 2
    err = capsys.readouterr().err
    # One line; the file states gpu_mem_gb, so the remedy is more GPUs, not a larger stated GPU.
    assert err.count("\n") == 1 and err.startswith("error: ") and "gpu_mem_gb" not in err
    assert "give it more GPUs (executor.gpus_per_node x executor.nodes, 1 GPU(s) now)" in err
    assert not (tmp_path / "out").exists()
    # A fixed DDP is kept, and refused: more GPUs cannot help a replicated run; sharding can.
    with pytest.raises(UserError, match="does not fit") as e:
        load_sweep(_gpu_sweep(tmp_path, '["6B"]', 8, 'strategy = "ddp"'))
    assert "more GPUs" not in str(e.value) and 'let the plan shard it (train.strategy = "auto" or "fsdp")' in str(e.value)
    # A GPU too small to leave anything after the headroom: one line, not a negative budget.
    f = _gpu_sweep(tmp_path, '["1B"]', 1).read_text().replace("gpu_mem_gb = 80", "gpu_mem_gb = 2")
    (tmp_path / "gpu.toml").write_text(f)
    with pytest.raises(UserError, match=r"gpu\.toml: executor\.gpu_mem_gb = 2 leaves the memory plan nothing: .* over 2\.22 GB"):
        load_sweep(tmp_path / "gpu.toml")


def test_the_20b_ladder_plans_with_every_run_placed():
    sw = load_sweep(ROOT / "sweeps" / "isoflop-20b.toml")
    assert len(sw.runs) == 35 and all(r.placement for r in sw.runs)
    assert all(r.placement.choice.memory.total <= usable_bytes(80) for r in sw.runs)
    sharded = sorted(r.n_params for r in sw.runs if r.config.strategy == "fsdp")
    assert len(sharded) == 7 and sharded[0] > 2.5e9 and sharded[-1] > 9e9
    ddp = [r for r in sw.runs if r.config.strategy == "ddp"]
    assert len(ddp) == 28 and all(r.n_params < 2.5e9 and r.config.micro_batch >= 4 for r in ddp)
