"""`scaling prepare` and token shards, on real text (docstrings and comments of the stdlib)."""

from __future__ import annotations

import json
import os
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scaling.cli import main
from scaling.data.corpus import clean, extract_file
from scaling.data.prepare import PrepareConfig, prepare, spoken_form, split_mask
from scaling.data.shards import TokenShards, load_tokenizer, read_meta
from scaling.base.errors import UserError

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ["argparse.py", "textwrap.py", "difflib.py", "statistics.py", "fractions.py", "inspect.py",
           "pathlib.py", "typing.py", "functools.py", "shutil.py", "subprocess.py", "tarfile.py",
           "json/__init__.py", "json/decoder.py", "email/message.py", "collections/__init__.py"]


@pytest.fixture(scope="module")
def docs() -> list[str]:
    out = []
    for name in MODULES:
        for _kind, pieces in extract_file(str(STDLIB / name)):
            out.extend(p for p in pieces if len(p) >= 200)
    assert len(out) >= 150
    return out[:300]


def _write_txt_dir(root: Path, docs) -> Path:
    d = root / "txt"
    d.mkdir()
    for i, text in enumerate(docs):
        (d / f"doc{i:04d}.txt").write_text(text, encoding="utf-8")
    (d / "notes.csv").write_text("ignored,in,a,directory\n")  # unknown types in a directory are skipped
    return d


def _write_jsonl(root: Path, docs, field="text") -> Path:
    p = root / "corpus.jsonl"
    with open(p, "w", encoding="utf-8") as fh:
        for i, text in enumerate(docs):
            fh.write(json.dumps({"id": i, field: text}) + "\n")
    return p


def _write_parquet(root: Path, docs, field="text") -> Path:
    p = root / "corpus.parquet"
    pl.DataFrame({"id": range(len(docs)), field: docs}).write_parquet(p)
    return p


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["prepare", "--quiet", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _split_docs(d: Path, split: str) -> list[str]:
    shards, tok = TokenShards.open(d, split), load_tokenizer(d)
    return [tok.decode(shards.doc(i)[:-1]) for i in range(shards.n_docs)]


def _check_consistent(d: Path, expected_docs: list[str]) -> None:
    meta = read_meta(d)
    total_docs = 0
    got = []
    for split in ("train", "val"):
        s = TokenShards.open(d, split)
        info = meta["splits"][split]
        assert s.tokens.dtype == np.dtype(meta["dtype"]) and s.doc_starts.dtype == np.int64
        assert s.n_tokens == len(s.tokens) == (d / f"{split}.bin").stat().st_size // s.tokens.itemsize
        assert s.doc_starts[0] == 0 and s.doc_starts[-1] == s.n_tokens and len(s.doc_starts) == s.n_docs + 1
        # Every document ends with exactly one <eos>, and <eos> appears nowhere else.
        assert np.all(s.tokens[s.doc_starts[1:] - 1] == s.meta["eos_id"])
        assert int((np.asarray(s.tokens) == s.meta["eos_id"]).sum()) == s.n_docs
        texts = _split_docs(d, split)
        assert info["n_bytes"] == sum(len(t.encode("utf-8")) for t in texts)
        assert s.bytes_per_token == pytest.approx(info["n_bytes"] / info["n_tokens"])
        assert s.vocab_size == meta["vocab_size"] and int(s.tokens.max()) < s.vocab_size
        total_docs += s.n_docs
        got += texts
    assert total_docs == len(expected_docs)
    assert sorted(got) == sorted(expected_docs)  # decode(encode(doc)) == doc, and no doc lost


def test_prepare_txt_dir_round_trip(tmp_path, docs, capsys):
    corpus = _write_txt_dir(tmp_path, docs)
    out = tmp_path / "shards"
    code, stdout, _ = _cli(capsys, "--corpus", corpus, "--out", out, "--vocab-size", 512, "--val-fraction", 0.1)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["train"]["docs"] + summary["val"]["docs"] == len(docs)
    assert (out / "tokenizer.json").exists()
    meta = read_meta(out)
    assert meta["tokenizer"] == "bpe" and meta["vocab_size"] == 512 and meta["dtype"] == "uint16"
    assert (meta["pad_id"], meta["eos_id"], meta["clm_id"], meta["unk_id"]) == (0, 1, 2, 3)
    assert meta["source"]["paths"] == [str(corpus.resolve())] and len(meta["source"]["hash"]) == 64
    _check_consistent(out, docs)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    # Nothing but the shard directory was written beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards", "txt"]


@pytest.mark.parametrize("tokenizer", ["unigram", "bytes"])
def test_prepare_other_tokenizers(tmp_path, docs, tokenizer):
    out = prepare(docs[:120], tmp_path / tokenizer, PrepareConfig(tokenizer=tokenizer, vocab_size=512), progress=False)
    meta = read_meta(out)
    assert meta["tokenizer"] == tokenizer
    assert meta["vocab_size"] == (260 if tokenizer == "bytes" else 512)
    assert (out / "tokenizer.json").exists() == (tokenizer != "bytes")
    _check_consistent(out, docs[:120])
    if tokenizer == "bytes":
        s = TokenShards.open(out)
        assert s.n_tokens == s.n_bytes + s.n_docs  # one id per byte, plus the <eos>s


def test_three_formats_give_the_same_shards(tmp_path, docs, capsys):
    sub = docs[:80]
    inputs = {
        "txt": _write_txt_dir(tmp_path, sub),
        "jsonl": _write_jsonl(tmp_path, sub, field="body"),
        "parquet": _write_parquet(tmp_path, sub, field="body"),
    }
    tokens = {}
    for name, path in inputs.items():
        out = tmp_path / f"out-{name}"
        assert _cli(capsys, "--corpus", path, "--out", out, "--vocab-size", 400, "--text-field", "body")[0] == 0
        tokens[name] = (out / "train.bin").read_bytes() + (out / "val.bin").read_bytes()
        assert read_meta(out)["source"]["hash"] == read_meta(tmp_path / "out-txt")["source"]["hash"]
    assert tokens["txt"] == tokens["jsonl"] == tokens["parquet"]


def test_split_is_deterministic_disjoint_and_seeded(tmp_path, docs):
    sub = docs[:150]
    cfg = PrepareConfig(tokenizer="bytes", val_fraction=0.2, seed=3)
    a = prepare(sub, tmp_path / "a", cfg, progress=False)
    b = prepare(sub, tmp_path / "b", cfg, progress=False)
    for name in ("train.bin", "val.bin", "train_docs.npy", "val_docs.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    train, val = _split_docs(a, "train"), _split_docs(a, "val")
    assert not set(train) & set(val) and len(train) + len(val) == len(sub)
    assert 0.1 < len(val) / len(sub) < 0.3
    c = prepare(sub, tmp_path / "c", PrepareConfig(tokenizer="bytes", val_fraction=0.2, seed=4), progress=False)
    assert set(_split_docs(c, "val")) != set(val)
    # The mask depends on (index, seed) only: a longer corpus keeps the split of its prefix.
    m = split_mask(1000, 0.1, 7)
    assert np.array_equal(split_mask(500, 0.1, 7), m[:500]) and 50 < m.sum() < 150
    assert split_mask(3, 0.01, 0).sum() == 1  # tiny corpora still get a validation document


def test_spoken_form(tmp_path, docs):
    assert spoken_form("Hello, World! It's 3.5 (approx.)\n\nDon't  'quote'") == "hello world it's 3 5 approx don't quote"
    out = prepare(docs[:60], tmp_path / "spoken", PrepareConfig(vocab_size=400, spoken=True), progress=False)
    assert read_meta(out)["spoken"] is True
    texts = _split_docs(out, "train") + _split_docs(out, "val")
    assert sorted(texts) == sorted(spoken_form(d) for d in docs[:60])
    for t in texts:
        assert t == t.lower() and not any(ch in t for ch in ".,;:!?()[]{}\"\n") and "  " not in t


def test_existing_output(tmp_path, docs, capsys):
    corpus = _write_jsonl(tmp_path, docs[:50])
    out = tmp_path / "shards"
    assert _cli(capsys, "--corpus", corpus, "--out", out, "--tokenizer", "bytes")[0] == 0
    before = (out / "meta.json").read_text()
    # Same corpus and config: nothing to do, nothing rewritten.
    assert _cli(capsys, "--corpus", corpus, "--out", out, "--tokenizer", "bytes")[0] == 0
    assert (out / "meta.json").read_text() == before
    # A different config refuses without --force, replaces with it.
    code, _, err = _cli(capsys, "--corpus", corpus, "--out", out, "--tokenizer", "bytes", "--seed", 1)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "meta.json").read_text() == before
    assert _cli(capsys, "--corpus", corpus, "--out", out, "--tokenizer", "bytes", "--seed", 1, "--force")[0] == 0
    assert read_meta(out)["config"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "shards"]
    # A directory that is not a shard directory is never replaced, even with --force.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    code, _, err = _cli(capsys, "--corpus", corpus, "--out", other, "--tokenizer", "bytes", "--force")
    assert code == 2 and "not a shard directory" in err and (other / "keep.txt").read_text() == "precious"


def test_concurrent_writers_leave_one_complete_directory(tmp_path, docs):
    out, errors = tmp_path / "shards", []

    def build():
        try:
            prepare(docs[:100], out, PrepareConfig(vocab_size=400), progress=False)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _check_consistent(out, docs[:100])
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]


def _bad_inputs(tmp: Path):
    (tmp / "empty").mkdir()
    (tmp / "blank").mkdir()
    (tmp / "blank" / "a.txt").write_text("   \n\n ")
    (tmp / "data.csv").write_text("text\nhello\n")
    (tmp / "nofield.jsonl").write_text('{"body": "some text"}\n')
    (tmp / "badjson.jsonl").write_text('{"text": "ok"}\n{not json\n')
    pl.DataFrame({"body": ["a", "b"]}).write_parquet(tmp / "nocol.parquet")
    (tmp / "good.jsonl").write_text("".join(json.dumps({"text": f"document number {i} " * 20}) + "\n" for i in range(20)))
    good = tmp / "good.jsonl"
    return [
        (["--corpus", tmp / "missing"], "does not exist"),
        (["--corpus", tmp / "empty"], "no corpus files"),
        (["--corpus", tmp / "blank"], "empty corpus"),
        (["--corpus", tmp / "data.csv"], "unknown corpus file type"),
        (["--corpus", tmp / "nofield.jsonl"], "no field 'text'"),
        (["--corpus", tmp / "badjson.jsonl"], "badjson.jsonl:2"),
        (["--corpus", tmp / "nocol.parquet"], "no column 'text'"),
        (["--corpus", good, "--vocab-size", "abc"], "--vocab-size"),
        (["--corpus", good, "--vocab-size", "10"], "--vocab-size"),
        (["--corpus", good, "--tokenizer", "wordpiece"], "--tokenizer wordpiece: no such file"),
        (["--corpus", good, "--val-fraction", "1.5"], "--val-fraction"),
        (["--corpus", good, "default"], "default"),
    ]


def test_bad_inputs_exit_2_one_line_nothing_left(tmp_path, capsys):
    corpus_dir = tmp_path / "in"
    corpus_dir.mkdir()
    for args, needle in _bad_inputs(corpus_dir):
        out = tmp_path / "out"
        code, stdout, err = _cli(capsys, *args, "--out", out)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert needle in err, (needle, err)
        assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in"], args


def test_vocab_larger_than_corpus_supports(tmp_path, capsys):
    (tmp_path / "tiny.jsonl").write_text("".join(json.dumps({"text": "ab ba " * 5}) + "\n" for _ in range(5)))
    out = tmp_path / "new" / "dirs" / "o"
    code, _, err = _cli(capsys, "--corpus", tmp_path / "tiny.jsonl", "--out", out, "--vocab-size", 5000)
    assert code == 2 and "supports only" in err
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.jsonl"]  # not even the parents we made


def test_open_errors_name_the_path(tmp_path, docs):
    with pytest.raises(UserError, match="does not exist"):
        TokenShards.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty/meta.json: missing"):
        TokenShards.open(tmp_path / "empty")
    d = prepare(docs[:40], tmp_path / "s", PrepareConfig(tokenizer="bytes"), progress=False)
    meta_text = (d / "meta.json").read_text()
    (d / "meta.json").write_text(meta_text[:50])
    with pytest.raises(UserError, match=r"s/meta.json: not valid JSON"):
        TokenShards.open(d)
    meta = json.loads(meta_text)
    (d / "meta.json").write_text(json.dumps({**meta, "dtype": "uint32"}))
    with pytest.raises(UserError, match="does not fit vocab_size"):
        TokenShards.open(d)
    (d / "meta.json").write_text(meta_text)
    with open(d / "train.bin", "ab") as fh:
        fh.write(b"\0\0")
    with pytest.raises(UserError, match=r"train.bin: .* bytes, but meta.json says"):
        TokenShards.open(d)
    with pytest.raises(UserError, match="unknown split"):
        TokenShards.open(d, "test")
    (d / "val_docs.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match="val_docs.npy"):
        TokenShards.open(d, "val")


def test_corpus_extraction_rules(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text(
        '"""A module about widgets.\n\nIt explains how widgets are built and why they matter.\n\n'
        '>>> make_widget(3)\nWidget(3)\n\nThe end of the module docstring."""\n'
        "# Copyright 2024 Somebody. Licensed under the Apache License.\n"
        "# Licence blocks are dropped whole.\n"
        "\n"
        "# This comment explains why the cache is cleared before every run of the loop.\n"
        "x = compute(1, 2)  # trailing comments are not blocks\n"
        "def f():\n    '''Return the widget count, which is always a positive integer value.'''\n"
    )
    (docstrings_kind, docstrings), (comments_kind, comments) = extract_file(str(src))
    assert docstrings_kind == "docstrings" and comments_kind == "comments"
    assert docstrings[0].startswith("A module about widgets.") and ">>>" not in docstrings[0]
    assert "Widget(3)" not in docstrings[0] and docstrings[0].endswith("The end of the module docstring.")
    assert docstrings[1] == "Return the widget count, which is always a positive integer value."
    assert comments == ["This comment explains why the cache is cleared before every run of the loop."]
    assert clean("a  \n\n\n\nb") == "a\n\nb"
    (tmp_path / "bad.py").write_text("def (:\n")
    assert extract_file(str(tmp_path / "bad.py")) == []


@pytest.mark.slow
def test_default_shards_build_once_and_cache(tmp_path, monkeypatch):
    """The embedded corpus end to end: >= 10M tokens, provenance, cached on the second call."""
    from scaling.data.shards import ensure_default_shards

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    t0 = time.time()
    d = ensure_default_shards(progress=False)
    built = time.time() - t0
    train, val = TokenShards.open(d, "train"), TokenShards.open(d, "val")
    assert train.n_tokens + val.n_tokens >= 10_000_000
    assert train.vocab_size == 8192 and train.meta["tokenizer"] == "bpe" and 0 < val.n_docs < train.n_docs
    prov = train.meta["source"]["provenance"]
    assert train.meta["source"]["paths"] == "default" and train.meta["source"]["hash"] == prov["sha256"]
    names = {s["name"] for s in prov["sources"]}
    assert {"python-stdlib", "torch", "numpy", "scipy"} <= names
    assert all(s["license"] and s["version"] for s in prov["sources"])
    assert 3.0 < train.bytes_per_token < 5.0  # English-like text under an 8K BPE
    t0 = time.time()
    assert ensure_default_shards(progress=False) == d
    assert time.time() - t0 < 2.0 < built
    leftovers = [p for p in (tmp_path / "cache").rglob(".*tmp*")]
    assert not leftovers
    print(f"default shards built in {built:.1f}s: {train.n_tokens + val.n_tokens} tokens")
