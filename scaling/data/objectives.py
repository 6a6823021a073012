"""The AlexaTM mixed pre-training objective, built a whole batch at a time.

Every example is a pure function of (seed, example index): example i of a run is the same
whatever the batch size, the number of ranks, or how often the run was interrupted, which is
what makes resumption exact. Randomness comes from a counter-based hash (splitmix64) of
(seed, index, stream, position), so a batch is built with numpy array operations only.

Two tasks, chosen per example (CLM with probability `clm_ratio`, 0.2 by default):

* denoising (AlexaTM): a window of `seq_len` tokens from the packed token stream (documents
  separated by <eos>); exactly round(noise * seq_len) tokens are dropped in spans whose
  lengths follow Poisson(mean_span) (at least 1); no mask tokens are inserted. The encoder
  reads what is left, the decoder rewrites the WHOLE window.
* causal LM: `[CLM]` then a uniformly random 20-80% prefix of one document (a piece of at
  most seq_len tokens that does not cross a document boundary) go to the encoder; the
  decoder continues with the rest of that piece.

A decoder-only run of causal LM (`clm_window`, TrainConfig.arch "decoder") takes its CLM
examples as whole windows instead, as a GPT trains: the encoder input is `[CLM]` alone and
every token of the window is a target; with clm_ratio 1 the encoder input is one token long.
Validation always scores the split examples above (scaling/train/validation.py), whatever
the run trained on, so every run is scored on the same targets.

Batch shapes are fixed, (B, enc_len) and (B, seq_len) from shapes.run_lengths, so a
step costs the same FLOPs whatever the mix. The token budget D of a run counts seq_len
tokens per example (the source window), the unit the FLOP accounting uses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from scaling.base.shapes import IGNORE_INDEX, run_lengths

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_STREAM_WINDOW, _STREAM_TASK, _STREAM_SPANS, _STREAM_GAPS, _STREAM_SPLIT = 1, 2, 3, 4, 5


GOLDEN = np.uint64(0x9E3779B97F4A7C15)   # splitmix64's increment, 2^64 / golden ratio


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose every output bit depends on every
    input bit. The one copy of these constants (the data split, the objective, the digest)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def splitmix64(x: np.ndarray) -> np.ndarray:
    """One splitmix64 step of state x (uint64, wrapping): a counter-based hash of x."""
    return mix64(x + GOLDEN)


def uniforms(seed: int, idx: np.ndarray, stream: int, n: int) -> np.ndarray:
    """(len(idx), n) uniforms in [0, 1), a pure function of (seed, idx, stream, column)."""
    with np.errstate(over="ignore"):
        key = splitmix64(np.uint64(seed) * np.uint64(1_000_003) + np.uint64(stream))
        base = splitmix64(np.asarray(idx, dtype=np.uint64) ^ key)
        cols = np.arange(n, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
        bits = splitmix64(base[:, None] + cols[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _poisson_table(mean: float, kmax: int = 64) -> np.ndarray:
    k = np.arange(kmax)
    logp = k * math.log(mean) - mean - np.array([math.lgamma(i + 1) for i in k])
    return np.cumsum(np.exp(logp))


_LIMB = 16
_MAX_MODULUS = 1 << 40   # pos * limb and r * 2^16 stay under 2^57: no int64 overflow below it


def _mulmod(a: np.ndarray, m: int, n: int) -> np.ndarray:
    """(a * m) % n for int64 a in [0, n) without overflow: a * m would pass 2^63 once a shard
    holds ~3e9 windows (a 1T-token shard). Horner's rule over 16-bit limbs of m keeps every
    intermediate under 2^57, for any n below 2^40 windows (70T tokens at seq_len 64)."""
    if n > _MAX_MODULUS:
        raise ValueError(f"{n} windows: more than the 2^40 this shuffle supports")
    a = np.asarray(a, dtype=np.int64)
    limbs = []
    while True:
        limbs.append(m & ((1 << _LIMB) - 1))
        m >>= _LIMB
        if not m:
            break
    r = np.zeros_like(a)
    for limb in reversed(limbs):
        r = (r * (1 << _LIMB) + a * limb) % n
    return r


@dataclass(frozen=True)
class ObjectiveConfig:
    seq_len: int = 128
    clm_ratio: float = 0.2
    noise_density: float = 0.15
    mean_span: float = 3.0
    # The lab's own layout, for tests and benches; a run takes its shards' ids from meta.json
    # (scaling/train/stream.py), since a tokenizer the user brings keeps its own.
    pad_id: int = 0
    eos_id: int = 1
    clm_id: int = 2
    clm_window: bool = False    # CLM examples are whole windows after [CLM] (a decoder-only run)

    def __post_init__(self):
        if not 0.0 <= self.clm_ratio <= 1.0:
            raise ValueError(f"clm_ratio must be in [0, 1], got {self.clm_ratio}")
        if not 0.0 < self.noise_density < 0.5:
            raise ValueError(f"noise_density must be in (0, 0.5), got {self.noise_density}")
        if self.seq_len < 8:
            raise ValueError(f"seq_len must be at least 8, got {self.seq_len}")

    def scored(self) -> "ObjectiveConfig":
        """The examples every model is scored on (validation, `scaling score`): the objective's
        own CLM examples, a prefix then its continuation as the targets, whatever the run
        trained on; the same target tokens for every arch."""
        return dataclasses.replace(self, clm_window=False)

    @property
    def lengths(self) -> tuple[int, int]:
        return run_lengths(self.seq_len, self.noise_density, "decoder" if self.clm_window else "encdec",
                           self.clm_ratio)


def unique_tokens(tokens: int, split_tokens: int, seq_len: int) -> int:
    """The distinct source tokens a run of `tokens` sees of a split of `split_tokens`: its
    examples are whole windows of seq_len, and every epoch visits each of the split's windows
    once (`MixedObjective.window_starts`), so a run repeats data only past the first epoch."""
    return min(int(tokens), (int(split_tokens) // seq_len) * seq_len)


class MixedObjective:
    """Builds batches of the mixed objective from a token stream and its document starts.

    One piece: the two tasks share one counter-based random stream per example (the module
    docstring), and a batch's shapes are fixed across both; the methods are the steps of that
    one construction, in the order a batch is built."""

    def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, cfg: ObjectiveConfig, seed: int):
        self.tokens, self.doc_starts, self.cfg, self.seed = tokens, np.asarray(doc_starts), cfg, int(seed)
        L = cfg.seq_len
        self.n_windows = int(len(tokens) // L)
        if self.n_windows < 1:
            raise ValueError(f"token stream of {len(tokens)} tokens is shorter than one window of {L}")
        self.enc_len, self.dec_len = cfg.lengths
        self.n_drop = int(round(cfg.noise_density * L))
        self._cdf = _poisson_table(cfg.mean_span)
        # A fixed odd multiplier coprime with n_windows gives a bijection of window indices:
        # every epoch visits every window once, in a seed-dependent scrambled order.
        mult = int(splitmix64(np.array([self.seed], dtype=np.uint64))[0] % np.uint64(max(self.n_windows, 2)))
        mult |= 1
        while math.gcd(mult, self.n_windows) != 1:
            mult += 2
        self._mult = mult
        self._offset = int(splitmix64(np.array([self.seed + 17], dtype=np.uint64))[0] % np.uint64(self.n_windows))

    # ------------------------------------------------------------------ windows
    def window_starts(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        epoch, pos = np.divmod(idx, self.n_windows)
        w = (_mulmod(pos, self._mult, self.n_windows) + self._offset + (epoch % self.n_windows) * 7919) % self.n_windows
        return w * self.cfg.seq_len

    # ------------------------------------------------------------------- batch
    def batch(self, idx: np.ndarray, force: str | None = None) -> dict[str, np.ndarray]:
        """Examples `idx` as arrays: enc (B, enc_len), dec (B, seq_len), labels (B, seq_len),
        is_clm (B,). `force` = "denoise" or "clm" builds one task only (validation)."""
        idx = np.asarray(idx, dtype=np.int64)
        B, L = len(idx), self.cfg.seq_len
        if force == "denoise":
            is_clm = np.zeros(B, dtype=bool)
        elif force == "clm":
            is_clm = np.ones(B, dtype=bool)
        else:
            is_clm = uniforms(self.seed, idx, _STREAM_TASK, 1)[:, 0] < self.cfg.clm_ratio
        enc = np.full((B, self.enc_len), self.cfg.pad_id, dtype=np.int64)
        labels = np.full((B, L), IGNORE_INDEX, dtype=np.int64)
        starts = self.window_starts(idx)
        if (~is_clm).any():
            e, l = self._denoise(idx[~is_clm], starts[~is_clm])
            enc[~is_clm, : e.shape[1]] = e
            labels[~is_clm] = l
        if is_clm.any():
            e, l = (self._clm_whole if self.cfg.clm_window else self._clm)(idx[is_clm], starts[is_clm])
            enc[is_clm] = e
            labels[is_clm] = l
        dec = np.empty_like(labels)
        dec[:, 0] = self.cfg.pad_id  # decoder start token, as in T5
        dec[:, 1:] = np.where(labels[:, :-1] == IGNORE_INDEX, self.cfg.pad_id, labels[:, :-1])
        return {"enc": enc, "dec": dec, "labels": labels, "is_clm": is_clm}

    def drop_mask(self, idx: np.ndarray) -> np.ndarray:
        """(B, seq_len) bool: which window positions denoising drops for examples idx."""
        B, L, n_drop = len(idx), self.cfg.seq_len, self.n_drop
        # Span lengths: Poisson(mean) by inverse CDF, at least 1; take spans until they cover
        # n_drop tokens and trim the last so exactly n_drop are dropped.
        u = uniforms(self.seed, idx, _STREAM_SPANS, n_drop)
        lens = np.maximum(np.searchsorted(self._cdf, u), 1)
        ends = np.cumsum(lens, axis=1)
        n_spans = (ends < n_drop).sum(axis=1) + 1                       # (B,)
        cols = np.arange(n_drop)[None, :]
        valid = cols < n_spans[:, None]
        ends = np.minimum(ends, n_drop)
        lens = np.where(valid, ends - np.concatenate([np.zeros((B, 1), np.int64), ends[:, :-1]], axis=1), 0)
        # Spans go into distinct gaps between the kept tokens: rank random keys to pick
        # n_spans distinct gap indices in 0..kept, then sort them.
        kept = L - n_drop
        keys = uniforms(self.seed, idx, _STREAM_GAPS, kept + 1)
        gaps = np.argsort(keys, axis=1)[:, :n_drop]  # noise < 0.5 so n_drop <= kept + 1
        gaps = np.where(valid, gaps, kept + 1)                          # invalid -> sort last
        gaps = np.sort(gaps, axis=1)
        before = np.cumsum(lens, axis=1) - lens                         # dropped before span j
        span_start = gaps + before
        mark = np.zeros((B, L + 1), dtype=np.int64)
        rows = np.broadcast_to(np.arange(B)[:, None], span_start.shape)
        np.add.at(mark, (rows[valid], span_start[valid]), 1)
        np.add.at(mark, (rows[valid], (span_start + lens)[valid]), -1)
        return np.cumsum(mark, axis=1)[:, :L] > 0

    def _denoise(self, idx, starts):
        L = self.cfg.seq_len
        window = self.tokens[starts[:, None] + np.arange(L)[None, :]].astype(np.int64)
        drop = self.drop_mask(idx)
        enc = window[~drop].reshape(len(idx), L - self.n_drop)
        return enc, window

    def target_counts(self, idx: np.ndarray) -> np.ndarray:
        """Target tokens of each example, as batch(idx)["labels"] would hold them, without
        building the examples: a step's loss is normalised by its whole global batch's count,
        which each process knows before it has seen the other processes' examples."""
        idx = np.asarray(idx, dtype=np.int64)
        is_clm = uniforms(self.seed, idx, _STREAM_TASK, 1)[:, 0] < self.cfg.clm_ratio
        counts = np.full(len(idx), self.cfg.seq_len, dtype=np.int64)   # denoising rewrites the window
        if is_clm.any() and not self.cfg.clm_window:                   # a whole window is all targets
            _, piece_len, prefix = self._clm_split(idx[is_clm], self.window_starts(idx[is_clm]))
            counts[is_clm] = piece_len - prefix
        return counts

    def _clm_split(self, idx, starts):
        """(piece start, piece length, prefix length) of CLM examples: one document, the
        window's, cut to at most L tokens that stay inside it, split at 20-80%."""
        L = self.cfg.seq_len
        ds = self.doc_starts
        d = np.searchsorted(ds, starts, side="right") - 1
        doc_start, doc_end = ds[d], ds[d + 1]
        piece_start = np.minimum(starts, np.maximum(doc_start, doc_end - L))
        piece_len = np.minimum(doc_end - piece_start, L)
        u = uniforms(self.seed, idx, _STREAM_SPLIT, 1)[:, 0]
        frac = 0.2 + 0.6 * u
        prefix = np.clip(np.floor(frac * piece_len).astype(np.int64), 1, np.maximum(piece_len - 1, 1))
        return piece_start, piece_len, prefix

    def _clm(self, idx, starts):
        L, B = self.cfg.seq_len, len(idx)
        piece_start, piece_len, prefix = self._clm_split(idx, starts)
        pos = np.arange(L)[None, :]
        piece = self.tokens[np.minimum(piece_start[:, None] + pos, len(self.tokens) - 1)].astype(np.int64)
        enc = np.full((B, self.enc_len), self.cfg.pad_id, dtype=np.int64)
        enc[:, 0] = self.cfg.clm_id
        in_prefix = pos[:, : self.enc_len - 1] < prefix[:, None]
        enc[:, 1:] = np.where(in_prefix, piece[:, : self.enc_len - 1], self.cfg.pad_id)
        # Target: piece[prefix : piece_len], left-aligned.
        src = prefix[:, None] + pos
        tgt_valid = src < piece_len[:, None]
        labels = np.where(tgt_valid, np.take_along_axis(piece, np.minimum(src, L - 1), axis=1), IGNORE_INDEX)
        return enc, labels

    def _clm_whole(self, idx, starts):
        """CLM examples of a decoder-only run: [CLM] then the whole window, every token a target."""
        window = self.tokens[starts[:, None] + np.arange(self.cfg.seq_len)[None, :]].astype(np.int64)
        enc = np.full((len(idx), self.enc_len), self.cfg.pad_id, dtype=np.int64)
        enc[:, 0] = self.cfg.clm_id
        return enc, window
