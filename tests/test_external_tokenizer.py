"""A tokenizer the user brings (`scaling prepare --tokenizer PATH`), with real files built here:
a SentencePiece model trained with T5's ids, a byte-level BPE tokenizer.json whose specials sit
at other ids and has no pad, a BERT-style WordPiece tokenizer.json (the library's own encoder),
and a shard directory's tokenizer reused for another corpus. Then a short training run on them."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest

from scaling.base.errors import UserError
from scaling.cli import main
from scaling.data.layout import read_meta
from scaling.data.shards import TokenShards, load_tokenizer
from scaling.data.tokenizer import check_ids, dtype_for

# Text with edges a tokenizer could trip on: whitespace runs, non-ASCII, literal special names.
EDGES = ["", "  two  spaces\n\n\ttab", "café naïve 日本語 😀", "a </s> <pad> [CLM] <s> <unk> b", "x\r\ny  ", "1234567 3.14e-5"]


def _stdlib_docs() -> list[str]:
    import argparse, collections, functools, pathlib, re, textwrap  # noqa: E401

    docs = []
    for mod in (json, collections, argparse, pathlib, textwrap, functools, re, os, inspect):
        for obj in vars(mod).values():
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc and len(doc) > 100:
                docs.append(doc)
    return docs


def _jsonl(path: Path, docs) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two corpora (halves of the stdlib's docstrings) and three real tokenizer files."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    d = tmp_path_factory.mktemp("ext")
    docs = _stdlib_docs()
    assert len(docs) > 200
    half = len(docs) // 2
    out = {"docs": docs, "a": _jsonl(d / "a.jsonl", docs[:half]), "b": _jsonl(d / "b.jsonl", docs[half:])}

    # T5's ids (pad 0, eos 1, unk 2, no bos); lossless: no normalisation, bytes for unknown characters.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(docs), model_prefix=str(d / "t5"), vocab_size=500, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, byte_fallback=True, minloglevel=2,
        max_sentence_length=1 << 20)
    out["spm"] = d / "t5.model"

    # Byte-level BPE, specials at 0-7 with <unk> = 4, <s> = 5, </s> = 7 and no pad, no [CLM].
    hf = Tokenizer(models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=True)   # GPT-2's: trims the offsets the fast path reads
    hf.train_from_iterator(docs, trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<mask>", "<cls>", "<sep>", "<sys>", "<unk>", "<s>", "<user>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    hf.save(str(d / "bpe.json"))
    out["json"] = d / "bpe.json"

    # BERT's kind: a normalizer and another pre-tokenizer, so the library encodes.
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece()
    wp.train_from_iterator(docs, trainers.WordPieceTrainer(
        vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    wp.save(str(d / "wordpiece.json"))
    out["wordpiece"] = d / "wordpiece.json"
    out["dir"] = d
    return out


def _prepare(capsys, *args) -> tuple[int, str]:
    code = main(["prepare", "--quiet", "--val-fraction", "0.1", *map(str, args)])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def prepared(files, tmp_path_factory):
    """Corpus a under each tokenizer file, and corpus b under the SentencePiece shards' tokenizer."""
    d = tmp_path_factory.mktemp("shards")
    out = {}
    for name in ("spm", "json", "wordpiece"):
        out[name] = d / name
        assert main(["prepare", "--quiet", "--val-fraction", "0.1", "--corpus", str(files["a"]),
                     "--tokenizer", str(files[name]), "--out", str(out[name])]) == 0
    out["reuse"] = d / "reuse"
    assert main(["prepare", "--quiet", "--val-fraction", "0.1", "--corpus", str(files["b"]),
                 "--tokenizer", str(out["spm"]), "--out", str(out["reuse"])]) == 0
    return out


def _decoded_docs(shard_dir: Path, split: str = "train") -> tuple[list[str], list[list[int]]]:
    shards, tok = TokenShards.open(shard_dir, split), load_tokenizer(shard_dir)
    ids = [shards.doc(i).tolist() for i in range(shards.n_docs)]
    assert all(doc[-1] == shards.meta["eos_id"] for doc in ids)
    return [tok.decode(doc[:-1]) for doc in ids], ids


def test_sentencepiece_keeps_t5s_ids_and_adds_clm(files, prepared):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(files["spm"]))
    meta = read_meta(prepared["spm"])
    assert meta["tokenizer"] == "sentencepiece" and meta["vocab_size"] == 501 and meta["dtype"] == "uint16"
    assert (meta["pad_id"], meta["eos_id"], meta["unk_id"], meta["clm_id"]) == (0, 1, 2, 500)
    copy = prepared["spm"] / "tokenizer.model"
    assert copy.read_bytes() == files["spm"].read_bytes()
    assert meta["tokenizer_file"]["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert meta["tokenizer_file"]["source"] == str(files["spm"].resolve())
    assert meta["tokenizer_file"]["added"] == {"clm": 500}
    tok = load_tokenizer(prepared["spm"])
    assert tok.special_ids == {"pad": 0, "eos": 1, "clm": 500, "unk": 2}
    texts, ids = _decoded_docs(prepared["spm"])
    assert [doc[:-1] for doc in ids] == sp.encode(texts, out_type=int)   # the library's own ids
    # Lossless model: the documents come back exactly, in the split's order.
    assert set(texts) <= set(files["docs"]) and len(texts) > 100
    for text, enc in zip(EDGES, tok.encode_batch(EDGES)):
        assert tok.decode(enc) == text and not {0, 1, 500} & set(enc)   # a literal "</s>" is text
    assert tok.decode([500, *tok.encode_batch(["hi"])[0], 1]) == "[CLM]hi</s>"


def test_tokenizer_json_keeps_its_specials_and_gets_pad_and_clm_after_them(files, prepared):
    meta = read_meta(prepared["json"])
    assert meta["tokenizer"] == "hf-json" and meta["vocab_size"] == 702
    assert (meta["eos_id"], meta["unk_id"], meta["pad_id"], meta["clm_id"]) == (7, 4, 700, 701)
    assert meta["tokenizer_file"]["added"] == {"pad": 700, "clm": 701}
    assert (prepared["json"] / "tokenizer.json").read_bytes() == files["json"].read_bytes()
    tok = load_tokenizer(prepared["json"])
    assert tok.fast, "byte-level BPE without a normalizer: the fast encoder is exact for it"
    texts, ids = _decoded_docs(prepared["json"])
    assert [doc[:-1] for doc in ids] == tok.encode_reference(texts)
    assert set(texts) <= set(files["docs"])
    mixed = files["docs"][:50] + EDGES
    assert tok.encode_batch(mixed) == tok.encode_reference(mixed)
    for text, enc in zip(EDGES, tok.encode_batch(EDGES)):
        assert tok.decode(enc) == text and not set(tok.special_ids.values()) & set(enc)


def test_a_tokenizer_the_fast_encoder_cannot_reproduce_is_encoded_by_the_library(files, prepared):
    from tokenizers import Tokenizer

    meta = read_meta(prepared["wordpiece"])
    assert (meta["pad_id"], meta["unk_id"], meta["eos_id"], meta["clm_id"]) == (0, 1, 3, 600)   # eos: [SEP]
    tok = load_tokenizer(prepared["wordpiece"])
    assert not tok.fast
    reference = Tokenizer.from_file(str(files["wordpiece"]))
    texts = files["docs"][:40] + EDGES
    assert tok.encode_batch(texts) == [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    shards = TokenShards.open(prepared["wordpiece"], "val")
    assert shards.n_tokens > 0 and int(np.max(shards.tokens)) < meta["vocab_size"]


def test_a_shard_directorys_tokenizer_reused_gives_identical_ids(files, prepared, tmp_path, capsys):
    meta = read_meta(prepared["reuse"])
    assert meta["tokenizer"] == "sentencepiece"
    assert meta["tokenizer_file"]["source"] == str(prepared["spm"].resolve())
    assert meta["tokenizer_file"]["sha256"] == read_meta(prepared["spm"])["tokenizer_file"]["sha256"]
    # Corpus b through the file itself: the same shards, byte for byte.
    direct = tmp_path / "direct"
    assert _prepare(capsys, "--corpus", files["b"], "--tokenizer", files["spm"], "--out", direct)[0] == 0
    for name in ("train.bin", "val.bin", "train_docs.npy", "tokenizer.model"):
        assert (direct / name).read_bytes() == (prepared["reuse"] / name).read_bytes(), name
    # Rerun: a no-op (the tokenizer counts by its hash, not its path).
    before = (prepared["reuse"] / "meta.json").read_text()
    assert _prepare(capsys, "--corpus", files["b"], "--tokenizer", prepared["spm"], "--out", prepared["reuse"])[0] == 0
    assert (prepared["reuse"] / "meta.json").read_text() == before


@pytest.mark.parametrize("name", ["json", "spm"])
def test_a_short_run_trains_on_a_users_tokenizer(prepared, tmp_path, name):
    from scaling.base.config import TrainConfig
    from scaling.train.run import TrainingRun

    out, meta = tmp_path / "run", read_meta(prepared[name])
    run = TrainingRun(TrainConfig(params="100K", tokens=19_968, seq_len=32, batch_size=8, val_points=2,
                                  progress=False, data=str(prepared[name]), out=str(out)))
    rec = run.fit()
    assert rec["status"] == "completed" and rec["model"]["vocab_size"] == meta["vocab_size"]
    # The encoder masks the data's pad: 700 for the tokenizer.json (its id 0 is <mask>), not 0.
    assert run.module.model.pad_id == meta["pad_id"] and run.recorder is not None
    val = rec["val"]["mixed"]
    assert np.isfinite(val["loss"]) and val["loss"] < np.log(rec["model"]["vocab_size"])


def test_the_dtype_follows_the_vocabulary(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(70_000)]
    vocab = {"[UNK]": 0, "[PAD]": 1, "[SEP]": 2, **{w: i + 3 for i, w in enumerate(words)}}
    wl = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wl.add_special_tokens(["[UNK]", "[PAD]", "[SEP]"])
    wl.save(str(tmp_path / "big.json"))
    docs = [" ".join(words[j] for j in range(i, 70_000, 997)) for i in range(0, 700, 7)]
    out = tmp_path / "shards"
    code, err = _prepare(capsys, "--corpus", _jsonl(tmp_path / "c.jsonl", docs), "--tokenizer", tmp_path / "big.json", "--out", out)
    assert code == 0, err
    meta = read_meta(out)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_004 and meta["clm_id"] == 70_003
    shards = TokenShards.open(out, "train")
    assert int(np.max(shards.tokens)) > 65_535
    texts, _ = _decoded_docs(out)
    assert set(texts) <= set(docs)
    assert dtype_for(65_535) == np.uint16 and dtype_for(65_536) == np.uint32 and dtype_for(2**32 - 1) == np.uint32
    with pytest.raises(UserError, match="does not fit a uint32"):
        dtype_for(2**32)
    with pytest.raises(UserError, match="id 600, outside its vocabulary of 600"):
        check_ids(np.array([5, 600]), 600)
    # A meta.json whose dtype cannot hold its vocabulary is refused by every reader.
    bad = json.loads((out / "meta.json").read_text()) | {"dtype": "uint16"}
    (out / "meta.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match="does not fit vocab_size 70004"):
        read_meta(out)


def test_bad_tokenizers_exit_2_one_line_nothing_written(files, prepared, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    (d / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "config.json").write_text('{"vocab_size": 32000, "d_model": 512}')
    (d / "spiece.model").write_text("not a model, just text\n" * 10)
    (d / "cut.json").write_text(files["json"].read_text()[:500])
    no_tokenizer = d / "shards-without-tokenizer"
    no_tokenizer.mkdir()
    for name in ("meta.json", "train.bin", "val.bin", "train_docs.npy", "val_docs.npy"):
        (no_tokenizer / name).write_bytes((prepared["spm"] / name).read_bytes())
    tampered = d / "tampered"
    tampered.mkdir()
    for p in prepared["json"].iterdir():
        (tampered / p.name).write_bytes(p.read_bytes())
    (tampered / "tokenizer.json").write_text(files["wordpiece"].read_text())
    (d / "plain-dir").mkdir()
    cases = [
        (d / "random.bin", "not a tokenizer file"),
        (d / "config.json", "not a Hugging Face tokenizer.json"),
        (d / "spiece.model", "not a tokenizer file"),
        (d / "cut.json", "not valid JSON"),
        (d / "missing.model", "no such file or shard directory"),
        (no_tokenizer, "has no tokenizer"),
        (tampered, "sha256 differs"),
        (d / "plain-dir", "not a shard directory"),
    ]
    for path, needle in cases:
        out = tmp_path / "out"
        code, err = _prepare(capsys, "--corpus", files["a"], "--tokenizer", path, "--out", out)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (path, err)
        assert needle in err and str(path.name) in err, (needle, err)
        assert not out.exists(), path
    code, err = _prepare(capsys, "--corpus", files["a"], "--tokenizer", files["spm"], "--vocab-size", "800",
                         "--out", tmp_path / "out")
    assert code == 2 and "has its own vocabulary" in err and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_train_never_tokenizes_a_raw_corpus_itself(files, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--params", "100K", "--tokens", "20K", "--seq-len", "32", "--batch-size", "8", "--no-progress",
            "--out", str(out)]
    assert main([*base, "--corpus", str(files["a"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not token shards" in err and "scaling prepare --corpus" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert main([*base, "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert f"data {tmp_path / 'nowhere'}: no such directory" in err and not out.exists()


def _word_level(vocab: dict, specials: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]" if "[UNK]" in vocab else None))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)
    return tok


def test_only_special_tokens_take_a_role_and_a_files_truncation_is_ignored():
    from scaling.data.tokenizer_files import hf_tokenizer

    # "<pad>" and "</s>" are ordinary words here: text produces them, so they cannot be pad or eos.
    words = ["<pad>", "</s>", "the", "cat", "sat"]
    hf = _word_level({"<|endoftext|>": 0, **{w: i + 1 for i, w in enumerate(words)}}, ["<|endoftext|>"])
    hf.enable_truncation(max_length=4)
    hf.enable_padding(length=8, pad_id=1, pad_token="<pad>")
    tok = hf_tokenizer(hf.to_str(), "gpt2-like.json")
    assert tok.special_ids == {"eos": 0, "pad": 6, "clm": 7, "unk": 8} and tok.vocab_size == 9
    assert tok.added == {"pad": 6, "clm": 7, "unk": 8}
    assert [tok.hf.id_to_token(i) for i in (6, 7, 8)] == ["[PAD]", "[CLM]", "<unk>"]   # the first spelling free
    text = "the cat sat <pad> </s> the cat sat the cat"
    assert tok.encode_batch([text]) == [[3, 4, 5, 1, 2, 3, 4, 5, 3, 4]]   # whole, unpadded
    # A WordLevel model is not the fast path's: the library encodes, and says the same.
    assert not tok.fast and tok.encode_batch([text]) == tok.encode_reference([text])


def test_a_vocabulary_with_gaps_is_refused_rather_than_given_a_shared_id():
    from scaling.data.tokenizer_files import hf_tokenizer

    hf = _word_level({"[UNK]": 0, "[SEP]": 1, "the": 2, "cat": 4}, ["[UNK]", "[SEP]"])   # 4 tokens, id 3 free
    with pytest.raises(UserError, match="ids have gaps .* would share id 4 with 'cat'"):
        hf_tokenizer(hf.to_str(), "gaps.json")
