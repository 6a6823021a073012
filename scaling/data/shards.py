"""Token shards: the memory-mapped arrays every training run reads.

A shard directory (written by `scaling prepare`, or `ensure_default_shards()`):

    meta.json        tokenizer kind, vocab size, dtype, special ids, source hash and
                     provenance, per-split token/document/byte counts, versions
    tokenizer.json   the trained tokenizer (absent for bytes)
    train.bin        raw token ids, uint16 if vocab <= 65535 else uint32, every document
    val.bin          followed by <eos> (id 1)
    train_docs.npy   int64 start offset of each document in the .bin, plus a final sentinel
    val_docs.npy     equal to the token count (so doc i is tokens[starts[i]:starts[i+1]])

The split is by document: document i goes to validation when a hash of (i, seed) falls below
val_fraction, so it is deterministic, disjoint, and independent of the tokenizer.
`n_bytes` counts the UTF-8 bytes of a split's (normalised) text, so
bits/byte = loss_nats_per_token / ln 2 / bytes_per_token, comparable across tokenizers.
`n_tokens` includes the one <eos> per document.

A directory is written to a private temp dir and renamed into place, so a reader never sees a
half-written one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from scaling.base.errors import UserError
from scaling.data.objectives import GOLDEN, mix64
from scaling.base.rundir import temp_dir_beside
from scaling.data.tokenizer import (
    CLM_ID,
    EOS_ID,
    KINDS,
    PAD_ID,
    UNK_ID,
    BytesTokenizer,
    check_vocab_size,
    dtype_for,
    encode_batches,
    load_tokenizer_file,
    train_tokenizer,
)

FORMAT_VERSION = 1
SPLITS = ("train", "val")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
CORPUS_SUFFIXES = TEXT_SUFFIXES + (".jsonl", ".parquet")
# The tokenizer is trained on at most this much text (a deterministic sample of the training
# documents): a 8K-32K vocabulary has converged long before, and training time stays flat.
TOKENIZER_TRAIN_BYTES = 16 * 2**20
ENCODE_BATCH_BYTES = 4 * 2**20


# ---------------------------------------------------------------------------------------------
# Reading shards


@dataclass
class TokenShards:
    """One split of a shard directory: `tokens[doc_starts[i]:doc_starts[i+1]]` is document i."""

    path: Path
    split: str
    tokens: np.ndarray
    doc_starts: np.ndarray
    meta: dict = field(repr=False)

    @classmethod
    def open(cls, path, split: str = "train") -> "TokenShards":
        path = Path(path)
        if split not in SPLITS:
            raise UserError(f"{path}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        meta = read_meta(path)
        info = meta["splits"][split]
        dtype = np.dtype(meta["dtype"])
        n = int(info["n_tokens"])
        bin_path, docs_path = path / f"{split}.bin", path / f"{split}_docs.npy"
        if not bin_path.is_file():
            raise UserError(f"{bin_path}: missing token file")
        size = bin_path.stat().st_size
        if size != n * dtype.itemsize:
            raise UserError(
                f"{bin_path}: {size} bytes, but meta.json says {n} tokens of {dtype.name} ({n * dtype.itemsize} bytes)"
            )
        # np.memmap cannot map an empty file; an empty split is a zero-length array.
        tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype)
        try:
            starts = np.load(docs_path, allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"{docs_path}: missing document index") from None
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{docs_path}: not a valid .npy document index ({e})") from None
        if (
            starts.dtype != np.int64
            or starts.ndim != 1
            or len(starts) != int(info["n_docs"]) + 1
            or starts[0] != 0
            or starts[-1] != n
            or (len(starts) > 1 and np.any(np.diff(starts) <= 0))
        ):
            raise UserError(
                f"{docs_path}: document index does not match meta.json "
                f"(want int64, {info['n_docs'] + 1} increasing offsets from 0 to {n})"
            )
        return cls(path=path, split=split, tokens=tokens, doc_starts=starts, meta=meta)

    @property
    def n_tokens(self) -> int:
        return int(self.meta["splits"][self.split]["n_tokens"])

    @property
    def n_docs(self) -> int:
        return int(self.meta["splits"][self.split]["n_docs"])

    @property
    def n_bytes(self) -> int:
        return int(self.meta["splits"][self.split]["n_bytes"])

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / self.n_tokens if self.n_tokens else float("nan")

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def doc(self, i: int) -> np.ndarray:
        """Document i's tokens, its trailing <eos> included."""
        return self.tokens[self.doc_starts[i] : self.doc_starts[i + 1]]


_META_KEYS = ("format_version", "tokenizer", "vocab_size", "dtype", "eos_id", "splits")


def read_meta(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: shard directory does not exist (run `scaling prepare`)")
    if not path.is_dir():
        raise UserError(f"{path}: not a shard directory")
    mp = path / "meta.json"
    try:
        meta = json.loads(mp.read_text())
    except FileNotFoundError:
        raise UserError(f"{mp}: missing; {path} is not a shard directory (run `scaling prepare`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{mp}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or any(k not in meta for k in _META_KEYS):
        raise UserError(f"{mp}: not shard metadata (needs {', '.join(_META_KEYS)})")
    if meta["format_version"] != FORMAT_VERSION:
        raise UserError(f"{mp}: format_version {meta['format_version']!r}, this version reads {FORMAT_VERSION}")
    if meta["tokenizer"] not in KINDS:
        raise UserError(f"{mp}: unknown tokenizer {meta['tokenizer']!r}")
    if meta["dtype"] not in ("uint16", "uint32") or np.dtype(meta["dtype"]) != dtype_for(int(meta["vocab_size"])):
        raise UserError(f"{mp}: dtype {meta['dtype']!r} does not fit vocab_size {meta['vocab_size']}")
    for split in SPLITS:
        info = meta["splits"].get(split) if isinstance(meta["splits"], dict) else None
        if not isinstance(info, dict) or any(not isinstance(info.get(k), int) for k in ("n_tokens", "n_docs", "n_bytes")):
            raise UserError(f"{mp}: splits.{split} needs integer n_tokens, n_docs, n_bytes")
    return meta


def load_tokenizer(path):
    """The tokenizer of a shard directory: `.encode_batch(texts)` and `.decode(ids)`."""
    path = Path(path)
    meta = read_meta(path)
    tok = load_tokenizer_file(path / "tokenizer.json", meta["tokenizer"])
    if tok.vocab_size != meta["vocab_size"]:
        raise UserError(f"{path / 'tokenizer.json'}: vocabulary of {tok.vocab_size}, meta.json says {meta['vocab_size']}")
    return tok


# ---------------------------------------------------------------------------------------------
# Reading a corpus


def _text_field_of(path: Path, obj, line_no: int, text_field: str):
    if not isinstance(obj, dict):
        raise UserError(f"{path}:{line_no}: expected a JSON object per line")
    if text_field not in obj:
        raise UserError(f"{path}:{line_no}: no field {text_field!r} (fields: {', '.join(map(str, obj)) or 'none'}); use --text-field")
    value = obj[text_field]
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(f"{path}:{line_no}: field {text_field!r} is {type(value).__name__}, not text")
    return value


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    docs = []
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserError(f"{path}:{line_no}: not valid JSON ({e})") from None
            text = _text_field_of(path, obj, line_no, text_field)
            if text is not None:
                docs.append(text)
    return docs


def _read_parquet(path: Path, text_field: str) -> list[str]:
    import polars as pl

    try:
        schema = pl.read_parquet_schema(path)
    except Exception as e:  # polars raises several types for a bad file
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    if text_field not in schema:
        raise UserError(f"{path}: no column {text_field!r} (columns: {', '.join(schema) or 'none'}); use --text-field")
    if schema[text_field] not in (pl.String, pl.Utf8):
        raise UserError(f"{path}: column {text_field!r} is {schema[text_field]}, not text")
    col = pl.read_parquet(path, columns=[text_field])[text_field]
    return [t for t in col.to_list() if t is not None]


def _read_text(path: Path) -> list[str]:
    try:
        return [path.read_text(encoding="utf-8")]
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def corpus_files(paths: Sequence) -> list[Path]:
    """Expand the --corpus arguments into a sorted, de-duplicated list of corpus files."""
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p}: corpus path does not exist")
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in CORPUS_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise UserError(f"{p}: no corpus files in directory (want {', '.join(CORPUS_SUFFIXES)})")
            files.extend(found)
        elif p.suffix.lower() in CORPUS_SUFFIXES:
            files.append(p)
        else:
            raise UserError(f"{p}: unknown corpus file type {p.suffix or '(none)'!r}; want {', '.join(CORPUS_SUFFIXES)}")
    seen, out = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def read_corpus(paths: Sequence, text_field: str = "text") -> list[str]:
    """Documents of a corpus, in a fixed order (files sorted within each directory).

    .txt/.md/.rst: one document per file. .jsonl: one document per line (its `text_field`).
    .parquet: one document per row (column `text_field`). Documents that are empty or only
    whitespace are dropped.
    """
    docs: list[str] = []
    for f in corpus_files(paths):
        suffix = f.suffix.lower()
        if suffix == ".jsonl":
            docs.extend(_read_jsonl(f, text_field))
        elif suffix == ".parquet":
            docs.extend(_read_parquet(f, text_field))
        else:
            docs.extend(_read_text(f))
    return [d for d in docs if d.strip()]


# ---------------------------------------------------------------------------------------------
# Spoken form and the split


_SPOKEN_TABLE: dict[int, str] | None = None
_APOSTROPHE = re.compile(r"(?<![^\W\d_])'|'(?![^\W\d_])")  # an apostrophe not inside a word
_SPACES = re.compile(r"\s+")


def spoken_form(text: str) -> str:
    """AlexaTM's "spoken form": lower case, no punctuation or symbols (apostrophes inside
    words, as in "don't", are kept), whitespace collapsed to single spaces."""
    global _SPOKEN_TABLE
    if _SPOKEN_TABLE is None:
        # Every punctuation (P*) and symbol (S*) code point in the BMP becomes a space.
        _SPOKEN_TABLE = {
            c: " "
            for c in range(0x10000)
            if unicodedata.category(chr(c))[0] in "PS" and chr(c) != "'"
        }
    text = _APOSTROPHE.sub(" ", text.lower().translate(_SPOKEN_TABLE))
    return _SPACES.sub(" ", text).strip()


def split_mask(n_docs: int, val_fraction: float, seed: int) -> np.ndarray:
    """True for the documents that go to validation: splitmix64(seed, index) < fraction.

    Depends only on (index, seed), so it is reproducible and the same for every tokenizer. If no
    document lands in validation (tiny corpora), the one with the smallest hash does.
    """
    if n_docs == 0 or val_fraction <= 0:
        return np.zeros(n_docs, dtype=bool)
    with np.errstate(over="ignore"):
        z = mix64(np.arange(n_docs, dtype=np.uint64) + np.uint64((seed * int(GOLDEN)) % 2**64))
    u = (z >> np.uint64(11)).astype(np.float64) / 2.0**53
    mask = u < val_fraction
    if not mask.any():
        mask[int(np.argmin(u))] = True
    return mask


def corpus_hash(docs: Sequence[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8") + b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Writing shards


@dataclass(frozen=True)
class PrepareConfig:
    tokenizer: str = "bpe"
    vocab_size: int = 8192
    spoken: bool = False
    val_fraction: float = 0.01
    seed: int = 0
    text_field: str = "text"

    def __post_init__(self):
        check_vocab_size(self.tokenizer, self.vocab_size)
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1 and math.isfinite(self.val_fraction)):
            raise UserError(f"--val-fraction {self.val_fraction!r}: must be in [0, 1)")

    def identity(self) -> dict:
        """What decides the shards' content (with the source hash)."""
        d = {"tokenizer": self.tokenizer, "vocab_size": self.effective_vocab, "spoken": self.spoken,
             "val_fraction": self.val_fraction, "seed": self.seed}
        return d

    @property
    def effective_vocab(self) -> int:
        return BytesTokenizer.vocab_size if self.tokenizer == "bytes" else self.vocab_size


def _versions() -> dict:
    from scaling import __version__

    out = {"scaling": __version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import tokenizers

        out["tokenizers"] = tokenizers.__version__
    except ImportError:
        pass
    return out


def _sample_for_training(docs: Sequence[str], limit_bytes: int, seed: int) -> list[str]:
    total = sum(len(d) for d in docs)
    if total <= limit_bytes:
        return list(docs)
    order = np.random.default_rng(seed).permutation(len(docs))
    out, size = [], 0
    for i in order:
        out.append(docs[i])
        size += len(docs[i])
        if size >= limit_bytes:
            break
    return out


def _batches(docs: Sequence[str], max_bytes: int) -> list[Sequence[str]]:
    out, i = [], 0
    while i < len(docs):
        j, size = i, 0
        while j < len(docs) and (size < max_bytes or j == i):
            size += len(docs[j])
            j += 1
        out.append(docs[i:j])
        i = j
    return out


def _write_split(tmp: Path, split: str, docs: Sequence[str], tok, dtype: np.dtype, bar) -> dict:
    """Encode docs in batches (in parallel, in order) straight to <split>.bin; return the counts."""
    starts = [np.zeros(1, dtype=np.int64)]
    n_tokens = n_bytes = 0
    batches = _batches(docs, ENCODE_BATCH_BYTES)
    with open(tmp / f"{split}.bin", "wb") as fh:
        for batch, (ids, lengths) in zip(batches, encode_batches(tok, batches)):
            lengths = lengths + 1  # each document's <eos>
            ends = np.cumsum(lengths)
            out = np.empty(int(ends[-1]), dtype=dtype)
            eos_at = ends - 1
            keep = np.ones(len(out), dtype=bool)
            keep[eos_at] = False
            out[keep] = ids
            out[eos_at] = EOS_ID
            fh.write(out.tobytes())
            starts.append(n_tokens + ends)
            n_tokens += len(out)
            n_bytes += sum(len(d.encode("utf-8")) for d in batch)
            bar.update(sum(len(d) for d in batch))
    doc_starts = np.concatenate(starts).astype(np.int64)
    np.save(tmp / f"{split}_docs.npy", doc_starts)
    return {"n_tokens": int(n_tokens), "n_docs": len(docs), "n_bytes": int(n_bytes)}


def _same_shards(out: Path, identity: dict, source_hash: str) -> bool:
    try:
        meta = read_meta(out)
    except UserError:
        return False
    return meta.get("config") == identity and meta.get("source", {}).get("hash") == source_hash


def prepare(
    docs: Sequence[str],
    out,
    cfg: PrepareConfig = PrepareConfig(),
    source: dict | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Tokenize `docs` into a shard directory at `out`, atomically. Returns `out`.

    An existing shard dir with the same source and config is left as it is; a different one
    is replaced only with force=True; anything else at `out` is never touched.
    """
    from tqdm import tqdm

    out = Path(out)
    source = dict(source or {})
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise UserError(f"corpus {source.get('paths', '')!s}: no documents (empty corpus)".replace(" ''", ""))
    source_hash = source.get("hash") or corpus_hash(docs)
    source["hash"] = source_hash
    identity = cfg.identity()

    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out}: exists and is not a directory")
        if (out / "meta.json").exists():
            if _same_shards(out, identity, source_hash):
                return out
            if not force:
                raise UserError(f"{out}: holds shards of a different corpus or config; use --force to replace them")
        elif any(out.iterdir()):
            raise UserError(f"{out}: exists and is not a shard directory; choose another --out")

    t0 = time.time()
    if cfg.spoken:
        docs = [spoken_form(d) for d in docs]
        docs = [d for d in docs if d]
        if not docs:
            raise UserError("corpus: no documents left after spoken-form normalisation")
    val = split_mask(len(docs), cfg.val_fraction, cfg.seed)
    train_docs = [d for d, v in zip(docs, val) if not v]
    val_docs = [d for d, v in zip(docs, val) if v]
    if cfg.val_fraction > 0 and not train_docs:
        raise UserError(f"corpus has {len(docs)} document(s): too few to split into train and validation "
                        "(a .txt file is one document; put many documents in a .jsonl file)")

    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    ok = False
    try:
        if cfg.tokenizer == "bytes":
            tok = BytesTokenizer()
        else:
            if progress:
                print(f"training a {cfg.tokenizer} tokenizer ({cfg.vocab_size} ids)...", file=sys.stderr)
            sample = _sample_for_training(train_docs, TOKENIZER_TRAIN_BYTES, cfg.seed)
            tok = train_tokenizer(cfg.tokenizer, sample, cfg.vocab_size)
            if tok.vocab_size != cfg.vocab_size:
                # The trainer stops early when the corpus has fewer distinct pieces than asked.
                raise UserError(
                    f"--vocab-size {cfg.vocab_size}: the corpus supports only {tok.vocab_size} {cfg.tokenizer} ids; "
                    "use a smaller vocabulary or a larger corpus"
                )
            (tmp / "tokenizer.json").write_text(tok.hf.to_str())
        dtype = dtype_for(tok.vocab_size)
        total = sum(len(d) for d in docs)
        splits = {}
        with tqdm(total=total, desc="tokenizing", unit="B", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
            for name, part in (("train", train_docs), ("val", val_docs)):
                splits[name] = _write_split(tmp, name, part, tok, dtype, bar)
        meta = {
            "format_version": FORMAT_VERSION,
            "tokenizer": cfg.tokenizer,
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "pad_id": PAD_ID,
            "eos_id": EOS_ID,
            "clm_id": CLM_ID,
            "unk_id": UNK_ID,
            "spoken": cfg.spoken,
            "config": identity,
            "source": source,
            "splits": splits,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "prepare_seconds": round(time.time() - t0, 2),
            "versions": _versions(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _install(tmp, out, force, identity, source_hash)
        ok = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:  # leave no trace: remove the parent directories we created, if still empty
            for p in made:
                try:
                    p.rmdir()
                except OSError:
                    break
    return out


def _install(tmp: Path, out: Path, force: bool, identity: dict, source_hash: str) -> None:
    """Move the finished temp dir into place; an old shard dir is swapped out, then removed."""
    old = None
    if out.exists():
        if _same_shards(out, identity, source_hash):
            return  # a concurrent builder finished the same shards first: keep theirs
        if any(out.iterdir()):
            if not force:
                raise UserError(f"{out}: holds shards of a different corpus or config; use --force to replace them")
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        else:
            out.rmdir()
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
            old = None
        if not _same_shards(out, identity, source_hash):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def prepare_corpus(paths, out, cfg: PrepareConfig = PrepareConfig(), force: bool = False, progress: bool = True) -> Path:
    """`scaling prepare`: read --corpus (files, directories, or "default"), then `prepare`."""
    paths = [str(p) for p in (paths or ["default"])]
    if paths == ["default"]:
        from scaling.data.corpus import load_default_corpus

        docs, provenance = load_default_corpus(progress=progress)
        source = {"paths": "default", "hash": provenance["sha256"], "provenance": provenance}
    else:
        if "default" in paths:
            raise UserError("--corpus default cannot be combined with other corpus paths")
        docs = read_corpus(paths, cfg.text_field)
        if not docs:
            raise UserError(f"corpus {' '.join(paths)}: no documents (empty corpus)")
        source = {"paths": [str(Path(p).resolve()) for p in paths], "text_field": cfg.text_field}
    return prepare(docs, out, cfg, source=source, force=force, progress=progress)


def ensure_default_shards(tokenizer: str = "bpe", vocab_size: int = 8192, spoken: bool = False,
                          seed: int = 0, val_fraction: float = 0.01, progress: bool = True) -> Path:
    """Shards of the embedded default corpus, built into the cache on first use.

    $SCALING_CACHE/shards/default-<tokenizer>-<vocab>[-spoken]-<corpus key>/; concurrent callers
    each build privately and the first rename wins.
    """
    from scaling.data.corpus import cache_root, corpus_key

    cfg = PrepareConfig(tokenizer=tokenizer, vocab_size=vocab_size, spoken=spoken, val_fraction=val_fraction, seed=seed)
    name = f"default-{tokenizer}-{cfg.effective_vocab}{'-spoken' if spoken else ''}"
    if (seed, val_fraction) != (0, 0.01):
        name += f"-s{seed}-v{val_fraction:g}"
    out = cache_root() / "shards" / f"{name}-{corpus_key()}"
    if (out / "meta.json").exists():
        return out
    return prepare_corpus(["default"], out, cfg, force=False, progress=progress)


def resolve_data(data: str | None) -> Path:
    """A token shards directory: the one given, the embedded corpus's (built into the cache
    on first use), or a raw corpus (files or a directory) prepared into the cache."""
    if data in (None, "", "default"):
        return ensure_default_shards()
    path = Path(data)
    if not path.exists():
        raise UserError(f"corpus {data}: no such file or directory")
    if (path / "meta.json").exists():
        return path
    import hashlib

    from scaling.data.corpus import cache_root

    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    # Same path, changed content: the cache entry is ours to replace (force=True).
    return prepare_corpus([path], cache_root() / "shards" / f"corpus-{path.name}-{key}", force=True)
