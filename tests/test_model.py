"""Model accounting: the size rule, exact parameter counts, analytic FLOPs vs the counter."""

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling.base.config import parse_count
from scaling.base.errors import UserError
from scaling.train.model import IGNORE_INDEX, EncoderDecoder, ModelConfig

torch.set_num_threads(2)


SIZES = ["100K", "1M", "10M", "350M", "1.5B", 20_000_000_000, "175B"]


# (an 8K vocabulary alone is over 100K parameters: that case is test_too_small_for_vocabulary)
@pytest.mark.parametrize("target,vocab", [(t, 260) for t in SIZES] + [(t, 8192) for t in SIZES[1:]])
def test_size_rule_lands_within_10_percent(target, vocab):
    cfg = ModelConfig.from_params(target, vocab_size=vocab, max_len=256)
    ratio = cfg.n_params() / parse_count(target)
    assert 1 / 1.1 <= ratio <= 1.1, (cfg, ratio)
    assert cfg.d_model % cfg.n_heads == 0
    # AlexaTM's 46:32 encoder:decoder split
    assert abs(cfg.n_enc_layers / cfg.n_layers - 46 / 78) < 0.2


def test_size_rule_gives_alexatm_20b():
    cfg = ModelConfig.from_params("20B", vocab_size=150_000, max_len=1024)
    assert (cfg.n_enc_layers, cfg.n_dec_layers, cfg.d_model, cfg.n_heads) == (46, 32, 4096, 32)
    assert cfg.d_ff == 4 * 4096


def test_size_rule_is_monotone_in_target():
    sizes = [ModelConfig.from_params(f"{n}M").n_params() for n in (2, 5, 10, 20, 50, 100, 200)]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("bad", ["abc", "-5M", "0", "12Q", ""])
def test_bad_size_strings(bad):
    with pytest.raises(UserError):
        ModelConfig.from_params(bad)


def test_too_small_for_vocabulary():
    with pytest.raises(UserError, match="within 10%"):
        ModelConfig.from_params("50K", vocab_size=32000)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("target,vocab", [("100K", 260), ("2M", 8192), ("30M", 8192)])
def test_param_count_is_exact(target, vocab, tied):
    cfg = ModelConfig.from_params(target, vocab_size=vocab, max_len=128, tied_embeddings=tied)
    model = EncoderDecoder(cfg)
    total = sum(p.numel() for p in model.parameters())
    assert total == cfg.n_params()
    emb = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("tok_emb", "enc_pos", "dec_pos", "lm_head")))
    assert total - emb == cfg.n_params(embeddings=False)


@pytest.mark.parametrize(
    "target,vocab,enc_len,dec_len",
    [("100K", 260, 27, 64), ("1M", 8192, 109, 128), ("10M", 8192, 40, 96), ("100M", 8192, 21, 48)],
)
def test_train_flops_match_flop_counter(target, vocab, enc_len, dec_len):
    cfg = ModelConfig.from_params(target, vocab_size=vocab, max_len=128)
    model = EncoderDecoder(cfg)
    B = 2
    enc = torch.randint(4, vocab, (B, enc_len))
    enc[1, enc_len // 2 :] = 0  # padding exercises the masked path
    dec = torch.randint(4, vocab, (B, dec_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(enc, dec, dec.clone()).backward()
    measured = counter.get_total_flops()
    analytic = B * cfg.train_flops(enc_len, dec_len)
    assert abs(measured / analytic - 1) < 0.05, (measured, analytic)


def test_flops_are_not_6nd():
    """At small sizes attention and the LM head make 6N a poor estimate; for an
    encoder-decoder 6 N_total D double counts. The analytic count says by how much."""
    cfg = ModelConfig.from_params("10M", vocab_size=8192, max_len=1024)
    per_tok = cfg.flops_per_token(seq_len=1024)
    ratio = per_tok / (6 * cfg.n_params())
    assert 0.3 < ratio < 1.5 and abs(ratio - 1) > 0.05


def test_inference_cheaper_than_training():
    cfg = ModelConfig.from_params("10M")
    assert cfg.inference_flops(100, 50) < cfg.forward_flops(100, 50) * 1.01
    assert cfg.inference_flops(100, 50) > 0.5 * cfg.forward_flops(100, 50)


def test_padding_is_masked_out_of_loss_and_attention():
    torch.manual_seed(0)
    cfg = ModelConfig.from_params("1M", vocab_size=260, max_len=64)
    model = EncoderDecoder(cfg).eval()
    enc = torch.randint(4, 260, (1, 20))
    dec = torch.randint(4, 260, (1, 16))
    labels = dec.clone()
    labels[0, 10:] = IGNORE_INDEX
    base = model(enc, dec, labels)
    # Padding the encoder changes nothing; neither do decoder positions without labels.
    enc_padded = torch.cat([enc, torch.zeros(1, 7, dtype=torch.long)], dim=1)
    dec2 = dec.clone()
    dec2[0, 11:] = 5
    assert torch.allclose(model(enc_padded, dec2, labels), base, atol=1e-5)
    # and the loss is the mean over labelled tokens
    per_tok = model.token_losses(enc, dec, labels)
    assert torch.allclose(per_tok[0, :10].mean(), base, atol=1e-6)
    assert float(per_tok[0, 10:].detach().abs().sum()) == 0.0
    assert math.isfinite(float(base.detach()))
