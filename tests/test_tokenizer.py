"""The lab's tokenizers: their special ids, exact round trips, and the fast encoder == the reference
encoder. A tokenizer the user brings: tests/test_external_tokenizer.py."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from scaling.data.corpus import extract_file
from scaling.data.tokenizer import (
    LAB_SPECIAL_IDS,
    SPECIAL_TOKENS,
    BytesTokenizer,
    encode_batches,
    train_tokenizer,
)
from scaling.base.errors import UserError

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ["argparse.py", "textwrap.py", "difflib.py", "statistics.py", "fractions.py", "inspect.py",
           "pathlib.py", "typing.py", "functools.py", "shutil.py", "subprocess.py", "tarfile.py"]

# Strings aimed at the chunker's edges: whitespace runs, Unicode spaces Python and the Rust regex
# classify differently (\x1c is space to Python only, \xa0 to both), contractions, non-ASCII words,
# control characters, literal special-token text, emoji, combining marks.
ADVERSARIAL = [
    "", " ", "  ", "\n", "a\xa0\n\nb", ".\x1c x", "x\x1c.y", "don't  <eos> [CLM] <pad> \t\n x",
    "日本語 テキスト😀 ", "  lead", "trail  ", "\u3000x\u2028y\u2003 z", "x\r\ny", "1234567 3.14e-5",
    "rock'n'roll '.'x ''s it's IT'S", "café. naïve—ok “quoted” x日本.y", "e\u0301 \u0301a",
    "\x00\x07\x7f ab\x1f", "tabs\t\tand\t spaces \t\n\n\n   x", "Ω≈ç√∫ ٣٤ ǅungla", "    def f(x_1):\n        return x_1**2  # ok",
]


def _fuzz(n: int, seed: int = 0) -> list[str]:
    alphabet = ["a", "Z", "1", "42", " ", "  ", "\n", "\n\n", "'", "s", "t", "re", "ll", ".", "_", "é", "日",
                "\xa0", "\t", "\x1c", "😀", "-", "<eos>", "[CLM]", "\r\n", "\u2003", "Ω", "٣", "ǅ", "\u0301"]
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def real_docs() -> list[str]:
    docs = []
    for name in MODULES:
        for _kind, pieces in extract_file(str(STDLIB / name)):
            docs.extend(pieces)
    assert len(docs) > 200, "the stdlib should give plenty of docstrings and comments"
    return docs


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def trained(request, real_docs):
    return train_tokenizer(request.param, real_docs + _fuzz(500, seed=1), 600)


def test_the_labs_special_ids_come_first(trained):
    assert trained.special_ids == LAB_SPECIAL_IDS == {"pad": 0, "eos": 1, "clm": 2, "unk": 3}
    for i, tok in enumerate(SPECIAL_TOKENS):
        assert trained.hf.token_to_id(tok) == i
    assert trained.vocab_size == 600 and trained.fast


def test_fast_encoder_equals_reference(trained, real_docs):
    texts = real_docs + ADVERSARIAL + _fuzz(3000, seed=2)
    fast = trained.encode_batch(texts)
    assert fast == trained.encode_reference(texts)
    # And again with a warm cache, in another batching, and after clearing it.
    assert trained.encode_batch(texts[::-1]) == fast[::-1]
    trained.clear_cache()
    assert trained.encode_batch(texts[:50]) == fast[:50]


def test_parallel_batches_equal_serial(trained, real_docs):
    batches = [real_docs[i : i + 40] for i in range(0, 200, 40)] + [ADVERSARIAL]
    serial = [trained.encode_to_array(b) for b in batches]
    parallel = list(encode_batches(trained, batches, workers=2))
    assert len(parallel) == len(batches)
    for (a_ids, a_len), (b_ids, b_len) in zip(serial, parallel):
        assert np.array_equal(a_ids, b_ids) and np.array_equal(a_len, b_len)


def test_literal_special_text_is_not_a_special_id(trained):
    ids = trained.encode_batch(["<eos> [CLM] <pad> <unk>"])[0]
    assert not set(ids) & set(trained.special_ids.values())


def test_round_trip(trained, real_docs):
    texts = real_docs[:100] + ADVERSARIAL
    for text, ids in zip(texts, trained.encode_batch(texts)):
        assert trained.decode(ids) == text


def test_encode_to_array_lengths(trained, real_docs):
    texts = real_docs[:30] + [""]
    ids, lengths = trained.encode_to_array(texts)
    assert ids.dtype == np.uint16 and lengths.sum() == len(ids) and lengths[-1] == 0
    assert [len(x) for x in trained.encode_reference(texts)] == lengths.tolist()


def test_bytes_tokenizer():
    tok = BytesTokenizer()
    assert tok.vocab_size == 260
    text = "héllo\n日本 <eos>"
    ids = tok.encode_batch([text])[0]
    assert ids == [4 + b for b in text.encode("utf-8")]
    assert tok.decode(ids) == text
    assert tok.decode([tok.special_ids["eos"]] + ids[:1]) == "<eos>h"


def test_bad_vocab_size():
    with pytest.raises(UserError, match="vocab"):
        train_tokenizer("bpe", ["some text"], 10)
    with pytest.raises(UserError, match="unknown tokenizer"):
        train_tokenizer("wordpiece", ["some text"], 1000)
