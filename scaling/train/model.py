"""The AlexaTM-style encoder-decoder Transformer, and a decoder-only one beside it (the
torch modules; `build_model` picks by ModelConfig.arch).

Architecture (AlexaTM 20B, Soltan et al. 2022): pre-LN sub-layers in encoder and decoder,
d_ff = 4 d_model, GELU, learned positional embeddings, a token embedding shared by encoder
and decoder, an LM head tied to it or not. Attention is `F.scaled_dot_product_attention`:
bidirectional in the encoder, causal in the decoder's self-attention, plus cross-attention
from every decoder layer to the final encoder states. For generation, `decode` takes a
`DecoderCache` (`model.new_cache()`) and runs only the new tokens (tests/test_keep.py checks
it gives the full pass's logits).

The shapes, the size rule and the exact parameter and FLOP counts live in the torch-free
`scaling.base.shapes` (re-exported here), tested against these modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.base.shapes import (  # noqa: F401  (re-exported for callers of scaling.train.model)
    ARCHS,
    IGNORE_INDEX,
    ALEXATM_ASPECT,
    ALEXATM_ENC_FRACTION,
    WIDTHS,
    ModelConfig,
    _head_dim,
    objective_lengths,
)


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

    def forward(self, x, memory=None, mask=None, causal=False, cache: dict | None = None):
        """`cache` (decoding one step at a time; None in training): self-attention appends
        this call's keys and values to the cached ones and attends over all of them;
        cross-attention projects the encoder states once and reuses them."""
        B, T, D = x.shape
        h = self.n_heads
        if self.cross:
            q = self.q(x)
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = (t.view(B, -1, h, D // h).transpose(1, 2) for t in self.kv(memory).split(D, dim=-1))
                if cache is not None:
                    cache["k"], cache["v"] = k, v
        else:
            q, k, v = self.qkv(x).split(D, dim=-1)
            k = k.view(B, T, h, D // h).transpose(1, 2)
            v = v.view(B, T, h, D // h).transpose(1, 2)
            if cache is not None:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
                past = k.shape[2] - T
                if causal and past:
                    # Query i (at position past + i) sees keys 0 .. past + i; one query sees all.
                    mask = None if T == 1 else (
                        torch.arange(past + T, device=x.device)[None, :] <= past + torch.arange(T, device=x.device)[:, None])
                    causal = False
        q = q.view(B, T, h, D // h).transpose(1, 2)
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

    def forward(self, x, mask, causal: bool = False, cache: dict | None = None):
        # causal, cache: a decoder-only model's layer (DecoderOnly): SDPA's own causal mask
        # where no mask is needed, and its keys and values kept for generation
        x = x + self.attn(self.ln1(x), mask=mask, causal=causal, cache=cache)
        return x + self.ff(self.ln2(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.self_attn = nn.LayerNorm(cfg.d_model), Attention(cfg, cross=False)
        self.ln2, self.cross_attn = nn.LayerNorm(cfg.d_model), Attention(cfg, cross=True)
        self.ln3, self.ff = nn.LayerNorm(cfg.d_model), FeedForward(cfg)

    def forward(self, x, memory, memory_mask, cache: dict | None = None):
        x = x + self.self_attn(self.ln1(x), causal=True, cache=None if cache is None else cache["self"])
        x = x + self.cross_attn(self.ln2(x), memory=memory, mask=memory_mask,
                                cache=None if cache is None else cache["cross"])
        return x + self.ff(self.ln3(x))


class DecoderCache:
    """Keys and values of the decoder's attention so far, per layer: self-attention's grow by
    the tokens of each `decode` call, cross-attention's are the encoder states' projections,
    computed at the first call. One cache belongs to one encoder output."""

    def __init__(self, n_layers: int):
        self.layers = [{"self": {}, "cross": {}} for _ in range(n_layers)]
        self.length = 0


def init_std(d_model: int) -> float:
    """Initial weight std: 0.5 / sqrt(d_model), i.e. scaled with the fan-in: 0.018 at GPT-2's
    width (768), near its fixed 0.02, and following the width elsewhere. A fixed 0.02 is ~4x too small
    at d = 32: attention logits start near zero, and measured on 2 cores a 60K-parameter model
    then sat on the corpus's bigram plateau (2.70 nats) for its whole 600-step run, where
    0.5/sqrt(d) reached 1.85 (README, "What the demo recovers")."""
    return 0.5 / math.sqrt(d_model)


def init_weights(model: "EncoderDecoder") -> None:
    """Normal(0, init_std) weights and embeddings, zero biases; residual-branch outputs
    scaled down by depth (GPT-2), so the residual stream stays O(1)."""
    std = init_std(model.cfg.d_model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
    for name, p in model.named_parameters():
        if name.endswith(("out.weight", "down.weight")):
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * model.cfg.n_layers))


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
        init_weights(self)

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

    def new_cache(self) -> "DecoderCache":
        """An empty KV cache for `decode` one piece at a time (generation)."""
        return DecoderCache(len(self.dec_layers))

    def decode(self, dec_ids, memory, memory_mask, cache: "DecoderCache | None" = None):
        """Logits (B, Td, V). With `cache`, dec_ids are the tokens after those decoded before
        (positions cache.length on); the logits equal the full pass's at those positions."""
        T = dec_ids.shape[1]
        start = 0 if cache is None else cache.length
        if start + T > self.cfg.max_len:
            raise ValueError(f"decoder length {start + T} exceeds max_len {self.cfg.max_len}")
        pos = torch.arange(start, start + T, device=dec_ids.device)
        x = self.tok_emb(dec_ids) + self.dec_pos(pos)
        for i, layer in enumerate(self.dec_layers):
            x = layer(x, memory, memory_mask, None if cache is None else cache.layers[i])
        if cache is not None:
            cache.length += T
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


def decoder_mask(keep, te: int, prefix_lm: bool):
    """A decoder-only model's (B, 1, T, T) boolean attention mask over a sequence whose first
    te tokens are the encoder's input (`keep`: (B, T), False at padding), or None when plain
    causal attention is exact (nothing padded, no prefix): SDPA's fastest kernels then apply.
    A one-token prefix ([CLM] before a whole window, a decoder run's CLM example) needs none;
    otherwise checking costs a host sync, so on GPU the mask is built. prefix_lm: the first
    te tokens see each other both ways."""
    T = keep.shape[1]
    if te == 1:
        return None
    i = torch.arange(T, device=keep.device)
    allowed = i[None, :] <= i[:, None]                       # causal
    if prefix_lm:
        allowed = allowed | ((i[None, :] < te) & (i[:, None] < te))
    elif not keep.is_cuda and bool(keep.all()):
        return None
    # A padded query still sees itself: no row of the softmax is empty.
    return (allowed[None, :, :] & keep[:, None, :] | torch.eye(T, dtype=torch.bool, device=keep.device))[:, None]


class DecoderOnly(nn.Module):
    """A decoder-only Transformer (arch "decoder" or "prefix-lm") with the encoder-decoder's
    `token_losses(enc_ids, dec_ids, labels)`: validation, the objective's examples and task
    scoring work unchanged. It reads enc_ids (padding masked out) then dec_ids[:, 1:] (no
    start token: the prefix's last real token predicts the first label, as a GPT reads
    "[CLM] prefix continuation"), positions counting real tokens only. "decoder" attends
    causally; "prefix-lm" reads the enc part both ways. Layers are EncoderLayer's (no
    cross-attention); one position table (ModelConfig.max_len)."""

    def __init__(self, cfg: ModelConfig, pad_id: int = 0):
        super().__init__()
        if not cfg.decoder_only:
            raise ValueError(f"DecoderOnly needs a decoder-only shape, got arch {cfg.arch!r}")
        self.cfg, self.pad_id = cfg, pad_id
        d = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_dec_layers))
        self.norm = nn.LayerNorm(d)
        self.lm_head = None if cfg.tied_embeddings else nn.Linear(d, cfg.vocab_size, bias=False)
        init_weights(self)

    def logits(self, enc_ids, dec_ids):
        """(B, Td, V): at each decoder place, the logits of its label (what EncoderDecoder's
        forward gives for the same inputs)."""
        te, td = enc_ids.shape[1], dec_ids.shape[1]
        ids = torch.cat([enc_ids, dec_ids[:, 1:]], dim=1)
        T = ids.shape[1]
        if T > self.cfg.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len {self.cfg.max_len}")
        keep = torch.cat([enc_ids != self.pad_id, torch.ones_like(dec_ids[:, 1:], dtype=torch.bool)], dim=1)
        pos = (keep.cumsum(1) - 1).clamp(min=0)                 # real tokens' positions, padding shares one
        x = self.tok_emb(ids) + self.pos(pos)
        mask = decoder_mask(keep, te, self.cfg.arch == "prefix-lm")
        for layer in self.layers:
            x = layer(x, mask, causal=mask is None)
        # The places whose next token is a label: the encoder input's last real token (padding
        # sits at the end of a row, as for EncoderDecoder), then every decoder input after the
        # start token. Only these reach the LM head.
        last = (enc_ids != self.pad_id).sum(1).clamp(min=1) - 1
        at = torch.cat([last[:, None], te + torch.arange(td - 1, device=ids.device).expand(ids.shape[0], -1)], dim=1)
        x = self.norm(x.gather(1, at[:, :, None].expand(-1, -1, x.shape[-1])))
        return self._head(x)

    def _head(self, x):
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, w)

    def token_losses(self, enc_ids, dec_ids, labels):
        """(B, Td) per-token cross-entropy in nats, 0 where labels == IGNORE_INDEX."""
        logits = self.logits(enc_ids, dec_ids)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="none")
        return loss.view(labels.shape)

    def new_cache(self) -> DecoderCache:
        """An empty KV cache for `decode` one piece at a time (generation)."""
        return DecoderCache(len(self.layers))

    def decode(self, ids, cache: DecoderCache):
        """Logits (B, T, V) of the next token at each of `ids`, the tokens after those decoded
        before (unpadded: a prompt, then what is generated). A prefix LM reads its first piece
        (the prompt) bidirectionally, as it read the encoder input in training; every later
        piece causally (tests/test_decoder.py: the logits equal `logits`')."""
        T, start = ids.shape[1], cache.length
        if start + T > self.cfg.max_len:
            raise ValueError(f"sequence length {start + T} exceeds max_len {self.cfg.max_len}")
        x = self.tok_emb(ids) + self.pos(torch.arange(start, start + T, device=ids.device))
        causal = not (self.cfg.arch == "prefix-lm" and start == 0)
        for layer, c in zip(self.layers, cache.layers):
            x = layer(x, None, causal=causal, cache=c["self"])
        cache.length += T
        return self._head(self.norm(x))

    def forward(self, enc_ids, dec_ids, labels):
        losses = self.token_losses(enc_ids, dec_ids, labels)
        n = (labels != IGNORE_INDEX).sum().clamp(min=1)
        return losses.sum() / n


def build_model(cfg: ModelConfig, pad_id: int = 0) -> nn.Module:
    """The module of a shape: EncoderDecoder, or DecoderOnly for a decoder-only arch."""
    return DecoderOnly(cfg, pad_id) if cfg.decoder_only else EncoderDecoder(cfg, pad_id)
