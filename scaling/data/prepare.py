"""Writing token shards from a corpus (`scaling prepare`): the corpus read (text files, .jsonl,
.parquet, or the embedded default corpus), normalised to spoken form if asked, split into
train and validation by document, tokenized (a tokenizer trained here, bytes, or the user's:
scaling/data/tokenizer_files.py), and written to a private temp dir that is renamed into
place. The directory's format is scaling/data/layout.py's; reading it is scaling/data/shards.py's.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from scaling import __version__
from scaling.base.errors import UserError
from scaling.base.rundir import temp_dir_beside
from scaling.data.corpus import load_default_corpus
from scaling.data.layout import FORMAT_VERSION, read_meta
from scaling.data.objectives import GOLDEN, mix64
from scaling.data.tokenizer import (
    SPECIAL_ROLES,
    TRAINED_KINDS,
    BytesTokenizer,
    check_vocab_size,
    encode_batches,
    train_tokenizer,
)
from scaling.data.tokenizer_files import TokenizerSource, open_tokenizer

TEXT_SUFFIXES = (".txt", ".md", ".rst")
CORPUS_SUFFIXES = TEXT_SUFFIXES + (".jsonl", ".parquet")
# The tokenizer is trained on at most this much text (a deterministic sample of the training
# documents): a 8K-32K vocabulary has converged long before, and training time stays flat.
TOKENIZER_TRAIN_BYTES = 16 * 2**20
ENCODE_BATCH_BYTES = 4 * 2**20
DEFAULT_VOCAB = 8192


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
    import polars as pl   # here, not above: only a .parquet corpus needs it

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
    tokenizer: str = "bpe"            # a kind the lab trains (bpe, unigram, bytes), or a path
    vocab_size: int | None = None     # of a trained vocabulary; None: DEFAULT_VOCAB
    spoken: bool = False
    val_fraction: float = 0.01
    seed: int = 0
    text_field: str = "text"

    def __post_init__(self):
        if self.trained:
            check_vocab_size(self.tokenizer, self.effective_vocab)
        elif self.vocab_size is not None:
            raise UserError(f"--vocab-size {self.vocab_size}: the tokenizer {self.tokenizer} has its own vocabulary; "
                            "leave --vocab-size out")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1 and math.isfinite(self.val_fraction)):
            raise UserError(f"--val-fraction {self.val_fraction!r}: must be in [0, 1)")

    @property
    def trained(self) -> bool:
        """Whether the tokenizer is the lab's to train (or bytes), not a path."""
        return self.tokenizer in TRAINED_KINDS

    def identity(self, source: TokenizerSource | None = None) -> dict:
        """What decides the shards' content (with the source hash): a user's tokenizer counts
        by its file's sha256, not by its path."""
        if source is None:
            kind, vocab, sha = self.tokenizer, self.effective_vocab, None
        else:
            kind, vocab, sha = source.kind, source.tokenizer.vocab_size, source.sha256
        d = {"tokenizer": kind, "vocab_size": vocab, "spoken": self.spoken,
             "val_fraction": self.val_fraction, "seed": self.seed}
        if sha is not None:
            d["tokenizer_sha256"] = sha
        return d

    @property
    def effective_vocab(self) -> int | None:
        if self.tokenizer == "bytes":
            return BytesTokenizer.vocab_size
        return (self.vocab_size or DEFAULT_VOCAB) if self.trained else None


def _versions() -> dict:
    out = {"scaling": __version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import tokenizers   # here, not above: optional; its version is recorded where it is installed

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
            out[eos_at] = tok.special_ids["eos"]
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


def _already_there(out: Path, identity: dict, source_hash: str, force: bool) -> bool:
    """Whether `out` already holds these shards (left as they are). Anything at `out` that is
    not a shard directory, or shards of another corpus or config without force, is refused."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if (out / "meta.json").exists():
        if _same_shards(out, identity, source_hash):
            return True
        if not force:
            raise UserError(f"{out}: holds shards of a different corpus or config; use --force to replace them")
    elif any(out.iterdir()):
        raise UserError(f"{out}: exists and is not a shard directory; choose another --out")
    return False


def _split(docs: list[str], cfg: PrepareConfig) -> tuple[list[str], list[str], list[str]]:
    """The documents (in spoken form if asked), and those of the train and validation splits."""
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
    return docs, train_docs, val_docs


@contextlib.contextmanager
def _private_dir(out: Path) -> Iterator[Path]:
    """A temp dir beside `out` to build the shards in, removed afterwards; when the build fails,
    the parent directories made for it go too (if still empty), so a failure leaves no trace."""
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    ok = False
    try:
        yield tmp
        ok = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for p in made:
                try:
                    p.rmdir()
                except OSError:
                    break


def _tokenizer(cfg: PrepareConfig, train_docs: list[str], tmp: Path, progress: bool,
               source: TokenizerSource | None) -> tuple[object, dict]:
    """The tokenizer and meta.json's record of it: the user's (its file copied into the build
    dir as it is), bytes, or one trained on a sample of the training documents (saved as
    tokenizer.json)."""
    if source is not None:
        if source.path is not None:
            shutil.copyfile(source.path, tmp / source.file_name)
        if progress:
            how = "the fast encoder" if getattr(source.tokenizer, "fast", False) else "the library's own encoder"
            print(f"tokenizing with the {source.kind} tokenizer of {source.source} "
                  f"({source.tokenizer.vocab_size} ids, {how})", file=sys.stderr)
        return source.tokenizer, source.record()
    if cfg.tokenizer == "bytes":
        return BytesTokenizer(), {"file": None, "sha256": None, "source": "bytes", "added": {}}
    if progress:
        print(f"training a {cfg.tokenizer} tokenizer ({cfg.effective_vocab} ids)...", file=sys.stderr)
    sample = _sample_for_training(train_docs, TOKENIZER_TRAIN_BYTES, cfg.seed)
    tok = train_tokenizer(cfg.tokenizer, sample, cfg.effective_vocab)
    if tok.vocab_size != cfg.effective_vocab:
        # The trainer stops early when the corpus has fewer distinct pieces than asked.
        raise UserError(
            f"--vocab-size {cfg.effective_vocab}: the corpus supports only {tok.vocab_size} {cfg.tokenizer} ids; "
            "use a smaller vocabulary or a larger corpus"
        )
    data = tok.hf.to_str().encode("utf-8")
    (tmp / "tokenizer.json").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    return tok, {"file": "tokenizer.json", "sha256": sha, "source": "trained", "added": {}}


def _write_splits(tmp: Path, parts: dict[str, list[str]], tok, progress: bool) -> tuple[np.dtype, dict]:
    """Every split encoded into the build dir, under one progress bar: the dtype and the counts."""
    from tqdm import tqdm   # here, not above: only a build loads it

    dtype = tok.dtype
    total = sum(len(d) for part in parts.values() for d in part)
    splits = {}
    with tqdm(total=total, desc="tokenizing", unit="B", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
        for name, part in parts.items():
            splits[name] = _write_split(tmp, name, part, tok, dtype, bar)
    return dtype, splits


def _meta(tok, tok_record: dict, dtype: np.dtype, identity: dict, source: dict, splits: dict,
          spoken: bool, t0: float) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        **{f"{role}_id": int(tok.special_ids[role]) for role in SPECIAL_ROLES},
        "tokenizer_file": tok_record,
        "spoken": spoken,
        "config": identity,
        "source": source,
        "splits": splits,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prepare_seconds": round(time.time() - t0, 2),
        "versions": _versions(),
    }


def prepare(
    docs: Sequence[str],
    out,
    cfg: PrepareConfig = PrepareConfig(),
    source: dict | None = None,
    force: bool = False,
    progress: bool = True,
    tokenizer: TokenizerSource | None = None,
) -> Path:
    """Tokenize `docs` into a shard directory at `out`, atomically. Returns `out`.

    An existing shard dir with the same source and config is left as it is; a different one
    is replaced only with force=True; anything else at `out` is never touched. `tokenizer`:
    the user's, already opened (`cfg.tokenizer` a path); else opened here.
    """
    out = Path(out)
    if tokenizer is None and not cfg.trained:
        tokenizer = open_tokenizer(cfg.tokenizer)
    source = dict(source or {})
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise UserError(f"corpus {source.get('paths', '')!s}: no documents (empty corpus)".replace(" ''", ""))
    source_hash = source.get("hash") or corpus_hash(docs)
    source["hash"] = source_hash
    identity = cfg.identity(tokenizer)
    if _already_there(out, identity, source_hash, force):
        return out
    t0 = time.time()
    docs, train_docs, val_docs = _split(docs, cfg)
    with _private_dir(out) as tmp:
        tok, tok_record = _tokenizer(cfg, train_docs, tmp, progress, tokenizer)
        dtype, splits = _write_splits(tmp, {"train": train_docs, "val": val_docs}, tok, progress)
        meta = _meta(tok, tok_record, dtype, identity, source, splits, cfg.spoken, t0)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _install(tmp, out, force, identity, source_hash)
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
    """`scaling prepare`: read --corpus (files, directories, or "default"), then `prepare`.
    A user's tokenizer is opened first: a bad one is refused before the corpus is read."""
    tokenizer = None if cfg.trained else open_tokenizer(cfg.tokenizer)
    paths = [str(p) for p in (paths or ["default"])]
    if paths == ["default"]:
        docs, provenance = load_default_corpus(progress=progress)
        source = {"paths": "default", "hash": provenance["sha256"], "provenance": provenance}
    else:
        if "default" in paths:
            raise UserError("--corpus default cannot be combined with other corpus paths")
        docs = read_corpus(paths, cfg.text_field)
        if not docs:
            raise UserError(f"corpus {' '.join(paths)}: no documents (empty corpus)")
        source = {"paths": [str(Path(p).resolve()) for p in paths], "text_field": cfg.text_field}
    return prepare(docs, out, cfg, source=source, force=force, progress=progress, tokenizer=tokenizer)
