"""Statistics and determinism of the AlexaTM mixed objective."""

import time

import numpy as np
import pytest

from scaling.train.model import IGNORE_INDEX
from scaling.data.objectives import MixedObjective, ObjectiveConfig


@pytest.fixture(scope="module")
def stream():
    """A packed stream of documents of varied length, each ended by <eos> (id 1)."""
    rng = np.random.default_rng(0)
    lens = rng.integers(3, 600, 3000)
    toks = [np.append(rng.integers(4, 8000, n - 1), 1) for n in lens]
    starts = np.concatenate([[0], np.cumsum(lens)])
    return np.concatenate(toks).astype(np.uint16), starts


def _spans(mask_row):
    d = np.diff(np.concatenate([[0], mask_row.astype(int), [0]]))
    return np.where(d == -1)[0] - np.where(d == 1)[0]


@pytest.mark.parametrize("seq_len", [64, 256, 1024])
def test_denoising_drops_15_percent_in_poisson_spans(stream, seq_len):
    obj = MixedObjective(*stream, ObjectiveConfig(seq_len=seq_len), seed=1)
    idx = np.arange(800)
    mask = obj.drop_mask(idx)
    assert (mask.sum(1) == round(0.15 * seq_len)).all()  # exactly 15% per example
    lens = np.concatenate([_spans(r) for r in mask])
    # Poisson(3) clipped at 1, the last span of each example trimmed to fit
    assert 2.4 < lens.mean() < 3.3
    assert lens.min() >= 1 and lens.max() > 5
    # spans are spread evenly over the window, not packed at one end
    quarters = mask.reshape(len(idx), 4, seq_len // 4).mean(axis=(0, 2))
    assert np.allclose(quarters, 0.15, atol=0.02), quarters


def test_denoising_encoder_is_window_without_dropped_tokens(stream):
    obj = MixedObjective(*stream, ObjectiveConfig(seq_len=128, clm_ratio=0.0), seed=2)
    idx = np.arange(50)
    b = obj.batch(idx)
    mask = obj.drop_mask(idx)
    for i in range(50):
        assert (b["labels"][i] == obj.tokens[obj.window_starts(idx)[i] : obj.window_starts(idx)[i] + 128]).all()
        assert (b["enc"][i] == b["labels"][i][~mask[i]]).all()
    # no mask tokens, no padding in denoising rows
    assert (b["enc"] > 0).all()
    # decoder input is the target shifted right behind a pad start token
    assert (b["dec"][:, 0] == 0).all() and (b["dec"][:, 1:] == b["labels"][:, :-1]).all()


def test_clm_prefix_split_and_single_document(stream):
    tokens, starts = stream
    obj = MixedObjective(tokens, starts, ObjectiveConfig(seq_len=256, clm_ratio=1.0), seed=3)
    b = obj.batch(np.arange(2000))
    assert b["is_clm"].all() and (b["enc"][:, 0] == 2).all()
    n_prefix = (b["enc"] != 0).sum(1) - 1
    n_target = (b["labels"] != IGNORE_INDEX).sum(1)
    long_docs = (n_prefix + n_target) >= 20
    frac = n_prefix[long_docs] / (n_prefix + n_target)[long_docs]
    assert frac.min() >= 0.18 and frac.max() <= 0.8
    assert abs(frac.mean() - 0.5) < 0.03  # uniform on [0.2, 0.8]
    # One document: an <eos> may only end the target, never sit inside the piece.
    for i in range(200):
        piece = np.concatenate([b["enc"][i, 1 : 1 + n_prefix[i]], b["labels"][i, : n_target[i]]])
        assert (piece[:-1] != 1).all()


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5, 1.0])
def test_mix_ratio(stream, ratio):
    obj = MixedObjective(*stream, ObjectiveConfig(seq_len=64, clm_ratio=ratio), seed=4)
    frac = obj.batch(np.arange(5000))["is_clm"].mean()
    assert abs(frac - ratio) < 0.02


def test_invalid_ratio():
    with pytest.raises(ValueError):
        ObjectiveConfig(clm_ratio=1.2)


def test_deterministic_per_example_whatever_the_batching(stream):
    cfg = ObjectiveConfig(seq_len=128)
    a = MixedObjective(*stream, cfg, seed=7).batch(np.arange(64))
    b = MixedObjective(*stream, cfg, seed=7).batch(np.arange(32, 96))
    for k in a:
        assert (a[k][32:] == b[k][:32]).all()
    c = MixedObjective(*stream, cfg, seed=8).batch(np.arange(64))
    assert not (a["labels"] == c["labels"]).all()


def test_an_epoch_visits_every_window_once(stream):
    obj = MixedObjective(*stream, ObjectiveConfig(seq_len=512), seed=5)
    starts = obj.window_starts(np.arange(obj.n_windows))
    assert len(np.unique(starts)) == obj.n_windows


def test_batches_are_cheap(stream):
    """Building a batch is a small fraction of a training step (measured in bench/ too)."""
    obj = MixedObjective(*stream, ObjectiveConfig(seq_len=256), seed=6)
    obj.batch(np.arange(32))
    t = time.perf_counter()
    for s in range(20):
        obj.batch(np.arange(s * 32, (s + 1) * 32))
    per_batch = (time.perf_counter() - t) / 20
    assert per_batch < 0.05  # a CPU step at this shape takes seconds; a GPU step >= ~50 ms


def test_window_shuffle_does_not_overflow_on_a_trillion_token_shard():
    """A 1T-token shard at seq_len 128 has 7.8e9 windows; pos * mult passed 2^63 and wrapped.
    The shuffle must stay a bijection there: exact against Python's big integers."""
    from scaling.data.objectives import _mulmod
    n = 7_812_500_003                                   # windows of a ~1T-token shard
    m = 6_700_417_417 | 1
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(0, n, 2000), [0, 1, n - 1, n - 2]]).astype(np.int64)
    want = np.array([(int(x) * m) % n for x in a], dtype=np.int64)
    assert int(a.max()) * m > 2**63                     # the old product overflowed here
    np.testing.assert_array_equal(_mulmod(a, m, n), want)
    # a bijection on a small modulus, checked exhaustively
    small = np.arange(1009, dtype=np.int64)
    assert len(np.unique(_mulmod(small, 123457 | 1, 1009))) == 1009
