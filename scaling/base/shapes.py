"""Model shapes, the size rule, and exact parameter and FLOP accounting: torch-free.

`scaling sweep plan`, `scaling fit` and `scaling plan` size and price models without
importing torch; `scaling.train.model` builds the modules from these configs. The counts are
tested against the instantiated module (`n_params()` equals its parameter count exactly)
and `train_flops()` against `torch.utils.flop_counter.FlopCounterMode` (tests/test_model.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from scaling.base.config import parse_count
from scaling.base.errors import UserError

IGNORE_INDEX = -100   # label of a position that takes no loss (torch's cross_entropy default)

# AlexaTM 20B: 46 encoder and 32 decoder layers, d_model 4096: d_model / total layers = 52.5.
ALEXATM_ENC_FRACTION = 46 / 78
ALEXATM_ASPECT = 4096 / 78

# The architectures a run can train (TrainConfig.arch): the AlexaTM encoder-decoder, and a
# decoder-only Transformer read causally ("decoder") or with its prefix bidirectional
# ("prefix-lm"). The two decoder-only kinds have the same shapes, parameters and FLOPs.
ARCHS = ("encdec", "decoder", "prefix-lm")


def _head_dim(d_model: int) -> int:
    # AlexaTM uses 128-dim heads at d=4096 (32 heads); small models keep a few heads.
    if d_model >= 2048:
        return 128
    if d_model >= 256:
        return 64
    if d_model >= 96:
        return 32
    return 16


def _n_heads(d_model: int) -> int:
    """Heads of about _head_dim each that divide d_model (56 -> 2 of 28, 64 -> 4 of 16)."""
    h = max(1, d_model // _head_dim(d_model))
    while d_model % h:
        h -= 1
    return h


# The widths the rule chooses from: powers of two and 1.5x powers of two (768, 1536, 3072,
# ...), the usual Transformer widths; depth then fine-tunes the parameter count. Below 256,
# finer steps as well (of 2 below 32, of 4 below 64, of 8 below 256): with only 1.5x steps in
# width, small targets between two widths had to be met by adding layers, and a ladder of
# small sizes zigzagged between wide-shallow and narrow-deep shapes (2+2 d32, 2+1 d48, 1+1
# d48, 3+2 d48, 2+1 d64 ...), whose losses at one compute differed by more than the sizes
# did. Now the small models of a sweep are one family (the aspect rule keeps them 1+1 up to
# d ~ 100) growing in width. Steps of 4 below 32 still left the demo's 21K-parameter run
# between 1+1 d20 and d24, and it came out 2+2 d16.
WIDTHS = sorted({int(m * 2**k) for k in range(4, 15) for m in (1, 1.5)} | set(range(16, 32, 2)) | set(range(32, 64, 4)) | set(range(64, 256, 8)))


@dataclass(frozen=True)
class ModelConfig:
    """One model shape and its exact counts: parameters, and training and inference FLOPs per
    token, tested against the torch modules (tests/test_model.py, tests/test_decoder.py).

    arch "encdec": n_enc_layers encoder and n_dec_layers decoder layers, one position table of
    max_len for each. A decoder-only arch ("decoder", "prefix-lm"): n_dec_layers layers without
    cross-attention, n_enc_layers 0, one position table of max_len for the sequence it reads
    (the encoder's input, then the decoder's: `scaling.train.model.DecoderOnly`).

    One piece: every count reads the same few fields, and the FLOP accounting is audited term
    by term against the parameter count beside it."""

    vocab_size: int = 8192
    d_model: int = 128
    n_heads: int = 4
    n_enc_layers: int = 2
    n_dec_layers: int = 1
    max_len: int = 1024          # learned positions, for encoder and decoder each
    tied_embeddings: bool = True  # LM head shares the token embedding
    bias: bool = True
    arch: str = "encdec"          # ARCHS

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise UserError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.d_model % self.n_heads:
            raise UserError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        enc_min = 0 if self.decoder_only else 1
        if (min(self.n_dec_layers, self.d_model, self.vocab_size, self.max_len) < 1 or self.n_enc_layers < enc_min
                or (self.decoder_only and self.n_enc_layers)):
            raise UserError(f"model shape must be positive: {self}")

    @property
    def decoder_only(self) -> bool:
        return self.arch != "encdec"

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
        arch: str = "encdec",
    ) -> "ModelConfig":
        """The shape with about `target` total parameters (within 10%).

        Over the usual widths (WIDTHS) and every depth L split encoder:decoder as AlexaTM's
        46:32, keep the shapes within 10% of the target and return the one whose width/depth
        ratio is closest to AlexaTM's 4096/78 (with half weight on the size error). At 20B
        this is AlexaTM 20B itself: 46+32 layers, d_model 4096, 32 heads of 128. A
        decoder-only arch is sized by the same rule, every layer a decoder layer: the same
        widths, the same aspect and tolerance, so the two families differ only in the recipe.
        """
        n = parse_count(target, "model size")
        best, best_score, closest = None, math.inf, None
        lo_ratio = 1 / 1.1 * 1.0001
        for d in WIDTHS:
            heads = _n_heads(d)

            def shape(total: int) -> "ModelConfig":
                if arch != "encdec":
                    return cls(vocab_size, d, heads, 0, total, max_len, tied_embeddings, arch=arch)
                n_enc = min(total - 1, max(1, round(total * enc_fraction)))
                return cls(vocab_size, d, heads, n_enc, total - n_enc, max_len, tied_embeddings)

            # N grows strictly with the depth (each step adds an encoder or a decoder layer), so
            # the depths within 10% of the target are one run, found by bisection: the same
            # shapes, in the same order, as trying every depth from 2 to 512.
            def first(ratio_at_least: float) -> int:
                lo, hi = 2, 513
                while lo < hi:
                    mid = (lo + hi) // 2
                    if shape(mid).n_params() / n >= ratio_at_least:
                        hi = mid
                    else:
                        lo = mid + 1
                return lo

            over = first(math.nextafter(1.1, math.inf))      # the first depth over 10% above
            # The closest shape of this width: either side of N = target (ties: the shallower).
            for total in sorted({max(2, min(512, t)) for t in (first(1.0) - 1, first(1.0))}):
                cfg = shape(total)
                if total > over:
                    continue
                if closest is None or abs(math.log(cfg.n_params() / n)) < abs(math.log(closest.n_params() / n)):
                    closest = cfg
            for total in range(first(lo_ratio), min(over, 513)):
                cfg = shape(total)
                ratio = cfg.n_params() / n
                # Shape first, size second: half weight on the size error lets the rule
                # return AlexaTM's exact shape (aspect 4096/78) for a 20B target.
                score = abs(math.log(d / total / aspect)) + 0.5 * abs(math.log(ratio))
                if score < best_score:
                    best, best_score = cfg, score
        if best is None:
            raise UserError(
                f"model size {target!r}: no {'encoder-decoder' if arch == 'encdec' else 'decoder-only'} shape lands within 10% with a "
                f"vocabulary of {vocab_size} and {max_len} positions (closest: "
                f"{closest.n_params():,} params); the embeddings alone may exceed it: try a "
                f"larger size or a smaller vocabulary"
            )
        return best

    # ---------------------------------------------------------------- parameters
    def n_params(self, embeddings: bool = True) -> int:
        """Exact parameter count of EncoderDecoder(self) (DecoderOnly(self) for a decoder arch).

        embeddings=False leaves out the token embedding, the position table(s) and an untied
        LM head (Kaplan's non-embedding N); Chinchilla used the total.
        """
        enc_layer, dec_layer = self.layer_params()
        if self.decoder_only:
            body = self.n_dec_layers * dec_layer + 2 * self.d_model  # + the final norm
        else:
            body = self.n_enc_layers * enc_layer + self.n_dec_layers * dec_layer + 2 * 2 * self.d_model  # + final norms
        if not embeddings:
            return body
        return body + self.n_embedding_params()

    def layer_params(self) -> tuple[int, int]:
        """Parameters of (one encoder layer, one decoder layer): the per-layer counts of
        n_params, and FSDP's units in the memory plan (scaling/base/memory.py). A decoder-only
        model's layers have no cross-attention: both are the encoder layer's count."""
        d, b = self.d_model, int(self.bias)
        ln = 2 * d
        attn = 4 * d * d + 4 * d * b
        ff = 2 * 4 * d * d + (4 * d + d) * b
        enc_layer = 2 * ln + attn + ff          # also a decoder-only layer: no cross-attention
        if self.decoder_only:
            return enc_layer, enc_layer
        return enc_layer, 3 * ln + 2 * attn + ff   # 2 norms, self-attention, FF; + cross-attention

    def n_embedding_params(self) -> int:
        d = self.d_model
        emb = self.vocab_size * d + (1 if self.decoder_only else 2) * self.max_len * d
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
        if self.decoder_only:
            # The decoder-only model reads the encoder's input then the decoder's, less the
            # decoder's start token (the encoder input's last token predicts the first
            # target): t tokens through every layer, the LM head over the td targets' places.
            t = te + td - 1
            return self.n_dec_layers * (t * 2 * 12 * d * d + 2 * 2 * t * t * d) + td * 2 * d * V
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

    def flops_per_token(self, seq_len: int = 1024, noise_density: float = 0.15, clm_ratio: float = 0.2) -> float:
        """Training FLOPs per source token under the AlexaTM objective: the encoder gets the
        window minus the dropped tokens, the decoder the whole window (CLM examples are
        padded to the same shapes, so they cost the same). A decoder-only model reads both
        (`run_lengths`: only [CLM] and the window when its run is all causal LM)."""
        enc, dec = run_lengths(seq_len, noise_density, self.arch, clm_ratio)
        return self.train_flops(enc, dec) / seq_len

    def inference_flops(self, enc_tokens: int, dec_tokens: int) -> int:
        """Forward FLOPs to encode `enc_tokens` once and generate `dec_tokens` with a KV
        cache: each generated token runs the decoder weights once and attends to the tokens
        before it and to the encoder states (cross K/V computed once)."""
        d, V = self.d_model, self.vocab_size
        te, td = int(enc_tokens), int(dec_tokens)
        if self.decoder_only:
            # The prompt's te tokens in one pass (scores as full matrices, as in training), then
            # td generated tokens, each through the weights once, attending to all before it.
            prompt = te * 2 * 12 * d * d + 2 * 2 * te * te * d
            gen = td * 2 * 12 * d * d + 2 * 2 * d * (td * te + td * (td + 1) // 2)
            return self.n_dec_layers * (prompt + gen) + td * 2 * d * V
        enc = self.n_enc_layers * (te * 2 * 12 * d * d + 2 * 2 * te * te * d)
        self_scores = 2 * 2 * d * (td * (td + 1) // 2)
        dec = self.n_dec_layers * (td * 2 * 14 * d * d + te * 2 * 2 * d * d + self_scores + 2 * 2 * td * te * d)
        return enc + dec + td * 2 * d * V

    def describe(self) -> str:
        if self.decoder_only:
            return (f"{self.arch}, {self.n_dec_layers} layers, d_model {self.d_model}, {self.n_heads} heads, vocab "
                    f"{self.vocab_size}: {self.n_params():,} params ({self.n_params(embeddings=False):,} non-embedding)")
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


def run_lengths(seq_len: int, noise_density: float = 0.15, arch: str = "encdec", clm_ratio: float = 0.2) -> tuple[int, int]:
    """(encoder input, decoder input) lengths of a run's training examples. A decoder-only
    ("decoder") run of causal LM alone trains on whole windows: its encoder input is [CLM]
    alone (scaling/data/objectives.py, `clm_window`), so it reads seq_len tokens, as a GPT
    does. Every other run has the objective's lengths (`objective_lengths`)."""
    if arch == "decoder" and clm_ratio >= 1.0:
        return 1, seq_len
    return objective_lengths(seq_len, noise_density)


def positions(seq_len: int, arch: str = "encdec") -> int:
    """Learned positions of a run's model: seq_len for the encoder and again for the decoder,
    or one table of 2 seq_len for a decoder-only model, which reads the two one after the
    other (validation's examples, any arch's training examples): the same embedding
    parameters either way."""
    return seq_len if arch == "encdec" else 2 * seq_len


def model_config(params, vocab_size: int, seq_len: int, tied_embeddings: bool = True, arch: str = "encdec") -> ModelConfig:
    """The shape a run trains: the size rule with the data's vocabulary and position tables
    as long as the source window. Sweeps and plans use this too, so they match runs exactly."""
    return ModelConfig.from_params(params, vocab_size=vocab_size, max_len=positions(seq_len, arch),
                                   tied_embeddings=tied_embeddings, arch=arch)
