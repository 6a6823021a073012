"""Memory per GPU of a training run, before it runs: torch-free.

`sweep plan` and `sweep launch` ask here whether a run fits its GPUs, under which strategy
(DDP: every process holds everything; FSDP: weights, gradients and optimiser state sharded
over the world) and at which micro-batch. Five parts, in bytes per GPU:

- weights: fp32 parameters (Lightning's bf16-mixed keeps fp32 parameters and autocasts, so
  they are the fp32 master copy); under FSDP a 1/world shard.
- gradients: fp32, one per parameter; under FSDP a shard.
- optimiser: AdamW's two fp32 moments (exp_avg, exp_avg_sq); under FSDP a shard.
- working copies: what the strategy holds beside them. DDP: its gradient buckets (Lightning's
  DDPStrategy leaves gradient_as_bucket_view off, so the buckets are a second fp32 copy of the
  gradients) and, under bf16-mixed, autocast's bf16 copies of the matmul weights, saved for
  backward. FSDP2 (MixedPrecisionPolicy bf16 parameters, fp32 reduction): the gathered bf16
  parameters of two blocks (the one running and the one prefetched), the root's (embeddings
  and norms, gathered for the whole step) and one block's fp32 gradients before their
  reduce-scatter.
- activations at the micro-batch: the tensors autograd saves for backward, counted layer by
  layer below, plus the loss's logits; with activation checkpointing each block keeps only its
  input and one block is recomputed at a time.

The activation counts follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models", section 4.1: 34 s b h bytes per GPT layer in 16-bit, plus 5 a s^2 b
for the attention scores), adapted to this model: no dropout (their 2 + 1 + 1 bytes of masks
go), flash attention (SDPA keeps no s^2 scores, only its output and a log-sum-exp), LayerNorm
in fp32 under autocast (it saves its fp32 input; the next matmul saves its own bf16 cast), and
the encoder-decoder's cross-attention: per decoder layer, a query over the decoder tokens and
keys and values over the ENCODER tokens, projected from the encoder's output (cast to bf16 once
per layer: autocast caches casts of weights only). Checked against torch on CPU: the bytes of
the distinct storages autograd saves for one micro-batch of a small model, in fp32 and under
bf16 autocast, with and without checkpointing (tests/test_memory.py).

A decoder-only model (arch "decoder", "prefix-lm"; scaling/train/model.py, DecoderOnly) reads
the encoder's input and the decoder's one after the other: each of its layers is an encoder
layer over those enc + dec - 1 tokens, and only the dec places that predict a label are
gathered for the final norm and the LM head (the gather saves the last layer's output whole).
Where the prefix is more than one token it attends under an explicit (B, 1, T, T) boolean mask
on a GPU, which SDPA turns into an additive mask in the query's dtype at every layer (its last
dimension padded to a multiple of 16 for the memory-efficient kernel): a copy each layer saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.base.shapes import ModelConfig

GB = 1e9
STRATEGIES = ("ddp", "fsdp")
# Kept free on every GPU: the CUDA context and cuBLAS/NCCL workspaces (~1-2 GB on an H100),
# and the caching allocator's fragmentation. A plan that fills a GPU to the byte fails on it.
HEADROOM = 0.10        # of the GPU's memory
RESERVED_GB = 2.0      # CUDA context, NCCL and cuBLAS workspaces
MIN_GPU_GB = RESERVED_GB / (1 - HEADROOM)   # a GPU of this much leaves a plan nothing
# Under DDP a micro-batch of fewer sequences than this is taken only where FSDP fits no more:
# one or two sequences a forward leave a large model's step dozens of sequential micro-batches,
# each too small to keep the GPU's matmuls busy, while FSDP's sharded state frees the room for
# more (its extra all-gather per micro-batch costs less than the idle GPU).
DDP_MIN_MICRO = 4


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU of one run, part by part (the `sweep plan` column is `total`)."""

    weights: float
    gradients: float
    optimizer: float
    working: float            # the strategy's copies beside them (see the module's docstring)
    activations: float        # at the micro-batch, without activation checkpointing
    activations_ckpt: float   # the same with checkpointing per block
    checkpointing: bool       # which of the two the run uses
    strategy: str
    micro_batch: int
    world: int

    @property
    def state(self) -> float:
        """Everything but the activations: what no micro-batch can shrink."""
        return self.weights + self.gradients + self.optimizer + self.working

    @property
    def total(self) -> float:
        return self.state + (self.activations_ckpt if self.checkpointing else self.activations)

    def line(self) -> str:
        act = self.activations_ckpt if self.checkpointing else self.activations
        return (f"{self.total / GB:.1f} GB per GPU under {self.strategy} on {self.world} GPU(s) at micro-batch "
                f"{self.micro_batch}: weights {self.weights / GB:.1f}, gradients {self.gradients / GB:.1f}, "
                f"optimiser {self.optimizer / GB:.1f}, working copies {self.working / GB:.1f}, activations "
                f"{act / GB:.1f} ({'with' if self.checkpointing else 'without'} checkpointing; "
                f"{(self.activations if self.checkpointing else self.activations_ckpt) / GB:.1f} "
                f"{'without' if self.checkpointing else 'with'})")


def usable_bytes(gpu_mem_gb: float) -> float:
    """What a plan may fill of a GPU of gpu_mem_gb: less the headroom and the reserved part."""
    return (gpu_mem_gb * (1 - HEADROOM) - RESERVED_GB) * GB


# ------------------------------------------------------------------ activations
def _layer_bytes(m: ModelConfig, enc: int, dec: int, mixed: bool) -> tuple[float, float]:
    """(one encoder layer, one decoder layer): bytes saved for backward per SEQUENCE.

    a: bytes of a matmul's output (bf16 under autocast, else fp32); r: the fp32 residual
    stream that LayerNorm saves; c: a LayerNorm output as the next matmul saves it (its bf16
    cast under autocast; in fp32 the LayerNorm's own output)."""
    d = m.d_model
    a = 2 if mixed else 4
    r, c = 4, (2 if mixed else 4)
    # Self-attention: LN input r, its output c, the packed qkv 3a (SDPA saves q, k, v: views of
    # it), SDPA's output a (also the output projection's input). Korthikanti's 11 less dropout.
    attn = r + c + 3 * a + a
    # Feed-forward: LN input r, output c, the up-projection's output 4a (GELU's input), GELU's
    # output 4a (the down-projection's input). Korthikanti's 19 less the dropout mask.
    ff = r + c + 4 * a + 4 * a
    enc_layer = enc * d * (attn + ff)
    # Cross-attention: LN input r and output c, q a, SDPA's output a over decoder tokens; over
    # encoder tokens the packed k, v (2a) and the encoder output as the kv matmul saves it (its
    # bf16 cast, made in every layer; in fp32 the one shared tensor, counted in _outer_bytes).
    cross_dec = r + c + a + a
    cross_enc = 2 * a + (2 if mixed else 0)
    dec_layer = dec * d * (attn + cross_dec + ff) + enc * d * cross_enc
    return enc_layer, dec_layer


def _outer_bytes(m: ModelConfig, enc: int, dec: int, mixed: bool) -> tuple[float, float, float]:
    """(saved on the encoder's side outside the layers, on the decoder's side, the loss's
    transient peak) per sequence.

    Encoder side: the final LayerNorm's fp32 input and the encoder output (fp32, read by every
    decoder layer). Decoder side: its final LayerNorm's fp32 input, the LM head's input, and
    log_softmax's fp32 output (the loss is cross-entropy in fp32 over the logits). Transient,
    at the start of backward: the gradient arriving at the log-probabilities and the one
    log_softmax passes down (2 x 4 bytes per logit); in the forward, the logits and their fp32
    copy (bf16 + fp32 under autocast) beside the log-probabilities: the larger of the two."""
    d, V = m.d_model, m.vocab_size
    c = 2 if mixed else 4
    enc_side = 4 * enc * d + 4 * enc * d
    dec_side = (4 + c) * dec * d + 4 * dec * V
    transient = dec * V * max(8, 6 if mixed else 4)
    return enc_side, dec_side, transient


def _decoder_only_bytes(m: ModelConfig, enc: int, dec: int, mixed: bool) -> tuple[float, float, float, float]:
    """A decoder-only model's (one layer, saved outside the layers, the loss's transient
    peak, backward's working set) per sequence: its layers are encoder layers over T = enc +
    dec - 1 tokens (`_layer_bytes`) with their attention mask's copy (`mask_bytes`); outside
    them, over the dec places gathered for the head, the decoder side of `_outer_bytes`, and
    the last layer's fp32 output over all T tokens, which the gather of those places saves whole."""
    T = enc + dec - 1
    layer, _ = _layer_bytes(m, T, dec, mixed)
    _, dec_side, transient = _outer_bytes(m, T, dec, mixed)
    work = T * m.d_model * (4 + 2 * 4 * (2 if mixed else 4))
    return layer + mask_bytes(enc, dec, mixed), 4 * T * m.d_model + dec_side, transient, work


def mask_bytes(enc: int, dec: int, mixed: bool) -> int:
    """Per sequence and layer, the attention mask a decoder-only layer saves on a GPU, where
    its prefix is more than one token (model.py, `decoder_mask`; none for [CLM] alone): SDPA's
    additive copy of the T x T booleans in the query's dtype (bf16 under autocast), each row
    padded to a multiple of 16."""
    T = enc + dec - 1
    return T * (-(-T // 16) * 16) * (2 if mixed else 4) if enc > 1 else 0


def activation_bytes(m: ModelConfig, micro_batch: int, enc_len: int, dec_len: int, mixed: bool,
                     checkpointing: bool = False) -> float:
    """Peak bytes of activations for one micro-batch (per GPU: every strategy here splits the
    batch, not the layers).

    Without checkpointing the peak is at the start of backward: every layer's saved tensors,
    those outside the layers, and the loss's transient. With checkpointing per block, each
    block keeps only its input (the fp32 residual stream); the peak is either that start of
    backward or the recomputation of one block (its activations and backward's working set)
    once the decoder's outer tensors are freed, whichever is larger."""
    if m.decoder_only:
        layer, outer, loss, work = _decoder_only_bytes(m, enc_len, dec_len, mixed)
        if checkpointing:
            # Every block's input: its residual stream and the boolean mask, one tensor for all.
            T = enc_len + dec_len - 1
            inputs = 4 * m.d_model * m.n_dec_layers * T + (T * T if enc_len > 1 else 0)
            per_seq = inputs + max(outer + loss, layer + work)
        else:
            per_seq = m.n_dec_layers * layer + outer + max(loss, work)
        return micro_batch * per_seq
    enc_layer, dec_layer = _layer_bytes(m, enc_len, dec_len, mixed)
    enc_side, dec_side, loss = _outer_bytes(m, enc_len, dec_len, mixed)
    # Backward's own working set beside what is saved: the gradient flowing down the residual
    # stream (fp32) and one block's widest gradients (the feed-forward's 4d hidden, in and out).
    work = max(enc_len, dec_len) * m.d_model * (4 + 2 * 4 * (2 if mixed else 4))
    if checkpointing:
        inputs = 4 * m.d_model * (m.n_enc_layers * enc_len + m.n_dec_layers * dec_len)
        block = max(enc_layer if m.n_enc_layers else 0, dec_layer)
        per_seq = inputs + max(enc_side + dec_side + loss, enc_side + block + work)
    else:
        layers = m.n_enc_layers * enc_layer + m.n_dec_layers * dec_layer
        per_seq = layers + enc_side + dec_side + max(loss, work)
    return micro_batch * per_seq


# ------------------------------------------------------------------------ state
def memory(m: ModelConfig, micro_batch: int, enc_len: int, dec_len: int, *, precision: str = "bf16-mixed",
           strategy: str = "ddp", world: int = 1, checkpointing: bool = False) -> Memory:
    """Bytes per GPU of training `m` at `micro_batch` sequences per forward (enc_len and dec_len
    tokens each: the encoder's input and the decoder's, read one after the other by a decoder-only
    model) under `strategy` over `world` processes. precision: "bf16-mixed" or "32"."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    mixed = precision == "bf16-mixed"
    n = m.n_params()
    shard = world if strategy == "fsdp" else 1
    weights, grads, adam = 4 * n / shard, 4 * n / shard, 8 * n / shard
    if strategy == "ddp":
        buckets = 4 * n if world > 1 else 0
        # Autocast's bf16 copies of every matmul weight (the tied head's once), kept for backward.
        casts = 2 * (m.n_params(embeddings=False) + m.vocab_size * m.d_model) if mixed else 0
        working = buckets + casts
    else:
        gathered = 2 if mixed else 4
        enc_block, dec_block = m.layer_params()
        root = n - m.n_enc_layers * enc_block - m.n_dec_layers * dec_block
        working = gathered * (2 * dec_block + root) + 4 * dec_block
    act = activation_bytes(m, micro_batch, enc_len, dec_len, mixed, False)
    act_ckpt = activation_bytes(m, micro_batch, enc_len, dec_len, mixed, True)
    return Memory(weights, grads, adam, working, act, act_ckpt, checkpointing, strategy, micro_batch, world)


@dataclass(frozen=True)
class Choice:
    """What a plan picks for a run on its GPUs: the strategy and micro-batch, and their memory."""

    strategy: str
    micro_batch: int
    memory: Memory
    why: str   # one line: what was tried before this


def choose(m: ModelConfig, share: int, enc_len: int, dec_len: int, gpu_mem_gb: float, *, world: int,
           precision: str = "bf16-mixed", strategy: str = "auto", micro_batch: int = 0,
           checkpointing: bool = False) -> Choice | None:
    """The strategy and micro-batch a run takes: under each strategy (DDP, then FSDP, unless
    `strategy` names one) the largest micro-batch that divides each process's `share` of the
    batch, at most `micro_batch` (0: the share), and fits `gpu_mem_gb`. DDP where it fits at
    DDP_MIN_MICRO sequences or more (or at the largest micro-batch allowed), else FSDP where it
    fits a larger one, else DDP's. None when nothing fits: even one sequence under FSDP leaves
    no room."""
    budget = usable_bytes(gpu_mem_gb)
    top = micro_batch or share
    micros = [k for k in range(top, 0, -1) if share % k == 0]

    def largest(s: str) -> Memory | None:
        for k in micros:
            mem = memory(m, k, enc_len, dec_len, precision=precision, strategy=s, world=world,
                         checkpointing=checkpointing)
            if mem.total <= budget:
                return mem
        return None

    tried = []
    for s in (STRATEGIES if strategy == "auto" else (strategy,)):
        mem = largest(s)
        if mem is None:
            least = memory(m, 1, enc_len, dec_len, precision=precision, strategy=s, world=world,
                           checkpointing=checkpointing)
            tried.append(f"{s} needs {least.total / GB:.0f} GB at micro-batch 1")
            continue
        if s == "ddp" and strategy == "auto" and mem.micro_batch < min(DDP_MIN_MICRO, micros[0]):
            sharded = largest("fsdp")
            if sharded is not None and sharded.micro_batch > mem.micro_batch:
                return Choice("fsdp", sharded.micro_batch, sharded, f"ddp fits micro-batch {mem.micro_batch} only")
        return Choice(s, mem.micro_batch, mem, "; ".join(tried))
    return None
