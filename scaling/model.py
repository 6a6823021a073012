"""The AlexaTM-style encoder-decoder Transformer, its size rule, and exact accounting.

Architecture (AlexaTM 20B, Soltan et al. 2022): pre-LN sub-layers in encoder and decoder,
d_ff = 4 d_model, GELU, learned positional embeddings, a token embedding shared by encoder
and decoder, an LM head tied to it or not. Attention is `F.scaled_dot_product_attention`:
bidirectional in the encoder, causal in the decoder's self-attention, plus cross-attention
from every decoder layer to the final encoder states.

Everything a scaling fit depends on is computed analytically here and tested against the
instantiated module: `ModelConfig.n_params()` equals the module's parameter count exactly,
and `ModelConfig.train_flops()` matches `torch.utils.flop_counter.FlopCounterMode`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.config import parse_count
from scaling.errors import UserError

IGNORE_INDEX = -100

# AlexaTM 20B: 46 encoder and 32 decoder layers, d_model 4096: d_model / total layers = 52.5.
ALEXATM_ENC_FRACTION = 46 / 78
ALEXATM_ASPECT = 4096 / 78


def _head_dim(d_model: int) -> int:
    # AlexaTM uses 128-dim heads at d=4096 (32 heads); small models keep a few heads.
    if d_model >= 2048:
        return 128
    if d_model >= 256:
        return 64
    if d_model >= 96:
        return 32
    return 16


# The widths the rule chooses from: powers of two and 1.5x powers of two (768, 1536, 3072,
# ...), the usual Transformer widths; depth then fine-tunes the parameter count.
WIDTHS = sorted({int(m * 2**k) for k in range(4, 15) for m in (1, 1.5)})


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 8192
    d_model: int = 128
    n_heads: int = 4
    n_enc_layers: int = 2
    n_dec_layers: int = 1
    max_len: int = 1024          # learned positions, for encoder and decoder each
    tied_embeddings: bool = True  # LM head shares the token embedding
    bias: bool = True

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise UserError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if min(self.n_enc_layers, self.n_dec_layers, self.d_model, self.vocab_size, self.max_len) < 1:
            raise UserError(f"model shape must be positive: {self}")

    @property
    def d_ff(self) -> int:
        return 4 * self.d_model

    @property
    def n_layers(self) -> int:
        return self.n_enc_layers + self.n_dec_layers

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ----------------------------------------------------------------- size rule
    @classmethod
    def from_params(
        cls,
        target: str | int | float,
        vocab_size: int = 8192,
        max_len: int = 1024,
        tied_embeddings: bool = True,
        enc_fraction: float = ALEXATM_ENC_FRACTION,
        aspect: float = ALEXATM_ASPECT,
    ) -> "ModelConfig":
        """The shape with about `target` total parameters (within 10%).

        Over the usual widths (WIDTHS) and every depth L split encoder:decoder as AlexaTM's
        46:32, keep the shapes within 10% of the target and return the one whose width/depth
        ratio is closest to AlexaTM's 4096/78 (with half weight on the size error). At 20B
        this is AlexaTM 20B itself: 46+32 layers, d_model 4096, 32 heads of 128.
        """
        n = parse_count(target, "model size")
        best, best_score, closest = None, math.inf, None
        for d in WIDTHS:
            hd = _head_dim(d)
            for total in range(2, 513):
                n_enc = min(total - 1, max(1, round(total * enc_fraction)))
                cfg = cls(vocab_size, d, d // hd, n_enc, total - n_enc, max_len, tied_embeddings)
                ratio = cfg.n_params() / n
                if closest is None or abs(math.log(ratio)) < abs(math.log(closest.n_params() / n)):
                    closest = cfg
                if ratio > 1.1:
                    break
                if ratio < 1 / 1.1 * 1.0001:
                    continue
                # Shape first, size second: half weight on the size error lets the rule
                # return AlexaTM's exact shape (aspect 4096/78) for a 20B target.
                score = abs(math.log(d / total / aspect)) + 0.5 * abs(math.log(ratio))
                if score < best_score:
                    best, best_score = cfg, score
        if best is None:
            raise UserError(
                f"model size {target!r}: no encoder-decoder shape lands within 10% with a "
                f"vocabulary of {vocab_size} and {max_len} positions (closest: "
                f"{closest.n_params():,} params); the embeddings alone may exceed it: try a "
                f"larger size or a smaller vocabulary"
            )
        return best

    # ---------------------------------------------------------------- parameters
    def n_params(self, embeddings: bool = True) -> int:
        """Exact parameter count of EncoderDecoder(self).

        embeddings=False leaves out the token embedding, both position tables and an untied
        LM head (Kaplan's non-embedding N); Chinchilla used the total.
        """
        d, b = self.d_model, int(self.bias)
        ln = 2 * d
        attn = 4 * d * d + 4 * d * b
        ff = 2 * 4 * d * d + (4 * d + d) * b
        enc_layer = 2 * ln + attn + ff
        dec_layer = 3 * ln + 2 * attn + ff
        body = self.n_enc_layers * enc_layer + self.n_dec_layers * dec_layer + 2 * ln  # + final norms
        if not embeddings:
            return body
        return body + self.n_embedding_params()

    def n_embedding_params(self) -> int:
        d = self.d_model
        emb = self.vocab_size * d + 2 * self.max_len * d
        if not self.tied_embeddings:
            emb += self.vocab_size * d
        return emb

    # --------------------------------------------------------------------- FLOPs
    def forward_flops(self, enc_tokens: int, dec_tokens: int) -> int:
        """Forward FLOPs (2 per multiply-add) of one sequence pair, teacher-forced.

        Counted, as FlopCounterMode counts them: every weight matmul (encoder weights over
        encoder tokens; decoder weights over decoder tokens, except the cross-attention K/V
        projections, which run over the ENCODER length although their weights sit in the
        decoder); attention scores and the weighted sum as full matrix products (causal
        included, the usual convention); the LM head over decoder tokens. Left out: layer
        norms, GELU, softmax, residual adds, embedding lookups, the loss (O(d) per token,
        well under 1% above 100K parameters).
        """
        d, V = self.d_model, self.vocab_size
        te, td = int(enc_tokens), int(dec_tokens)
        enc = self.n_enc_layers * (te * 2 * 12 * d * d + 2 * 2 * te * te * d)
        dec_weights = td * 2 * (4 + 2 + 8) * d * d  # self q,k,v,o; cross q,o; two FF matrices
        cross_kv = te * 2 * 2 * d * d
        dec_scores = 2 * 2 * td * td * d + 2 * 2 * td * te * d  # self + cross attention
        dec = self.n_dec_layers * (dec_weights + cross_kv + dec_scores)
        head = td * 2 * d * V
        return enc + dec + head

    def train_flops(self, enc_tokens: int, dec_tokens: int) -> int:
        """Forward + backward FLOPs of one sequence pair: backward does twice the forward's
        matmuls (gradients for inputs and for weights), so 3x forward."""
        return 3 * self.forward_flops(enc_tokens, dec_tokens)

    def flops_per_token(self, seq_len: int = 1024, noise_density: float = 0.15) -> float:
        """Training FLOPs per source token under the AlexaTM objective: the encoder gets the
        window minus the dropped tokens, the decoder the whole window (CLM examples are
        padded to the same shapes, so they cost the same)."""
        enc, dec = objective_lengths(seq_len, noise_density)
        return self.train_flops(enc, dec) / seq_len

    def inference_flops(self, enc_tokens: int, dec_tokens: int) -> int:
        """Forward FLOPs to encode `enc_tokens` once and generate `dec_tokens` with a KV
        cache: each generated token runs the decoder weights once and attends to the tokens
        before it and to the encoder states (cross K/V computed once)."""
        d, V = self.d_model, self.vocab_size
        te, td = int(enc_tokens), int(dec_tokens)
        enc = self.n_enc_layers * (te * 2 * 12 * d * d + 2 * 2 * te * te * d)
        self_scores = 2 * 2 * d * (td * (td + 1) // 2)
        dec = self.n_dec_layers * (td * 2 * 14 * d * d + te * 2 * 2 * d * d + self_scores + 2 * 2 * td * te * d)
        return enc + dec + td * 2 * d * V

    def describe(self) -> str:
        return (
            f"{self.n_enc_layers}+{self.n_dec_layers} layers, d_model {self.d_model}, "
            f"{self.n_heads} heads, vocab {self.vocab_size}: {self.n_params():,} params "
            f"({self.n_params(embeddings=False):,} non-embedding)"
        )


def objective_lengths(seq_len: int, noise_density: float = 0.15) -> tuple[int, int]:
    """(encoder, decoder) lengths of every training example for a source window of seq_len.

    Denoising drops exactly round(noise * seq_len) tokens, so its encoder input is
    seq_len - dropped; a CLM example's prefix (at most 80% of the window, plus [CLM]) fits
    in the same length for noise <= 0.2 and is padded. The decoder always gets seq_len.
    """
    n_drop = int(round(noise_density * seq_len))
    enc = seq_len - n_drop
    enc = max(enc, int(math.ceil(0.8 * seq_len)) + 1)
    return min(enc, seq_len + 1), seq_len


# ===================================================================== modules
class Attention(nn.Module):
    """Multi-head attention via SDPA. Self-attention packs Q,K,V in one matmul; cross-
    attention takes Q from the decoder and K,V (one matmul) from the encoder states."""

    def __init__(self, cfg: ModelConfig, cross: bool):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.cross = cfg.n_heads, cross
        if cross:
            self.q = nn.Linear(d, d, bias=cfg.bias)
            self.kv = nn.Linear(d, 2 * d, bias=cfg.bias)
        else:
            self.qkv = nn.Linear(d, 3 * d, bias=cfg.bias)
        self.out = nn.Linear(d, d, bias=cfg.bias)

    def forward(self, x, memory=None, mask=None, causal=False):
        B, T, D = x.shape
        h = self.n_heads
        if self.cross:
            q = self.q(x)
            k, v = self.kv(memory).split(D, dim=-1)
        else:
            q, k, v = self.qkv(x).split(D, dim=-1)
        q = q.view(B, T, h, D // h).transpose(1, 2)
        k = k.view(B, k.shape[1], h, D // h).transpose(1, 2)
        v = v.view(B, v.shape[1], h, D // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.d_model), Attention(cfg, cross=False)
        self.ln2, self.ff = nn.LayerNorm(cfg.d_model), FeedForward(cfg)

    def forward(self, x, mask):
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.ff(self.ln2(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.self_attn = nn.LayerNorm(cfg.d_model), Attention(cfg, cross=False)
        self.ln2, self.cross_attn = nn.LayerNorm(cfg.d_model), Attention(cfg, cross=True)
        self.ln3, self.ff = nn.LayerNorm(cfg.d_model), FeedForward(cfg)

    def forward(self, x, memory, memory_mask):
        x = x + self.self_attn(self.ln1(x), causal=True)
        x = x + self.cross_attn(self.ln2(x), memory=memory, mask=memory_mask)
        return x + self.ff(self.ln3(x))


def init_std(d_model: int) -> float:
    """Initial weight std: 0.5 / sqrt(d_model), i.e. scaled with the fan-in: 0.018 at GPT-2's
    width (768), near its fixed 0.02, and following the width elsewhere. A fixed 0.02 is ~4x too small
    at d = 32: attention logits start near zero, and measured on 2 cores a 60K-parameter model
    then sat on the corpus's bigram plateau (2.70 nats) for its whole 600-step run, where
    0.5/sqrt(d) reached 1.85 (README, "What the demo recovers")."""
    return 0.5 / math.sqrt(d_model)


class EncoderDecoder(nn.Module):
    """`model(enc_ids, dec_ids, labels)` -> mean token loss (padding masked out).

    enc_ids: (B, Te) with pad_id where padded; dec_ids: (B, Td) decoder inputs (targets
    shifted right, starting with pad_id, as T5 does); labels: (B, Td) with IGNORE_INDEX where
    no loss is taken. Padding sits at the end of each row, so the decoder's causal mask
    already keeps real tokens from seeing it; the encoder's padding is masked out of encoder
    self-attention and cross-attention.
    """

    def __init__(self, cfg: ModelConfig, pad_id: int = 0):
        super().__init__()
        self.cfg, self.pad_id = cfg, pad_id
        d = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.enc_pos = nn.Embedding(cfg.max_len, d)
        self.dec_pos = nn.Embedding(cfg.max_len, d)
        self.enc_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_enc_layers))
        self.dec_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_dec_layers))
        self.enc_norm, self.dec_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.lm_head = None if cfg.tied_embeddings else nn.Linear(d, cfg.vocab_size, bias=False)
        std = init_std(d)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std)
        # GPT-2: scale residual-branch outputs by depth so the residual stream stays O(1).
        for name, p in self.named_parameters():
            if name.endswith(("out.weight", "down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * cfg.n_layers))

    def encode(self, enc_ids):
        B, T = enc_ids.shape
        if T > self.cfg.max_len:
            raise ValueError(f"encoder length {T} exceeds max_len {self.cfg.max_len}")
        pos = torch.arange(T, device=enc_ids.device)
        x = self.tok_emb(enc_ids) + self.enc_pos(pos)
        keep = enc_ids != self.pad_id
        # (B, 1, 1, Te) boolean key mask; None when nothing is padded (lets SDPA use its
        # fastest kernels). Checking costs a host sync, so it is skipped on GPU.
        mask = keep[:, None, None, :]
        if not enc_ids.is_cuda and bool(keep.all()):
            mask = None
        for layer in self.enc_layers:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def decode(self, dec_ids, memory, memory_mask):
        T = dec_ids.shape[1]
        if T > self.cfg.max_len:
            raise ValueError(f"decoder length {T} exceeds max_len {self.cfg.max_len}")
        pos = torch.arange(T, device=dec_ids.device)
        x = self.tok_emb(dec_ids) + self.dec_pos(pos)
        for layer in self.dec_layers:
            x = layer(x, memory, memory_mask)
        x = self.dec_norm(x)
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, w)

    def token_losses(self, enc_ids, dec_ids, labels):
        """(B, Td) per-token cross-entropy in nats, 0 where labels == IGNORE_INDEX."""
        memory, mask = self.encode(enc_ids)
        logits = self.decode(dec_ids, memory, mask)
        loss = F.cross_entropy(
            logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="none",
        )
        return loss.view(labels.shape)

    def forward(self, enc_ids, dec_ids, labels=None):
        if labels is None:
            memory, mask = self.encode(enc_ids)
            return self.decode(dec_ids, memory, mask)
        losses = self.token_losses(enc_ids, dec_ids, labels)
        n = (labels != IGNORE_INDEX).sum().clamp(min=1)
        return losses.sum() / n
