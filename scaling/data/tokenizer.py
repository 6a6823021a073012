"""Tokenizers: one the lab trains on a corpus (BPE or unigram, Hugging Face `tokenizers`), raw
bytes, or a Hugging Face tokenizer the user brings (scaling/data/tokenizer_files.py opens it).

Every tokenizer object answers the same questions: `.kind`, `.vocab_size`, `.dtype` (of its
shards), `.special_ids` ({"pad", "eos", "clm", "unk"} -> id), `.encode_batch(texts)`,
`.encode_to_array(texts)` and `.decode(ids)`. Callers take the special ids from there (or from a
shard directory's meta.json), never from constants: a tokenizer the user brings keeps its own.

The lab's own tokenizers put the specials first (`LAB_SPECIAL_IDS`):

    0 <pad>   1 <eos> (document separator)   2 [CLM]   3 <unk>

and the bytes tokenizer maps byte b to id 4 + b (vocabulary 260).

Trained tokenizers use the byte-level pre-tokenizer (GPT-2's split regex over the text, then
bytes mapped to printable characters), with either a BPE or a unigram model on top. Byte-level
means every string is encodable (no <unk> in practice) and decode(encode(s)) == s exactly; the
unigram model is the one AlexaTM's SentencePiece used, the pre-tokenizer is the one GPT-2 used.

Why a custom encode path: `tokenizers`' own `encode_batch` manages ~3 MB/s on two cores, which
would make tokenising the bottleneck of a laptop demo. Natural text is Zipfian, so we split the
text into short chunks ourselves (words, punctuation runs, with a chunk boundary always at a
pre-token boundary: see `_CHUNK_RE`), encode each DISTINCT chunk once with the reference
tokenizer, and assemble documents from the cached chunk encodings with numpy gathers. The result is identical to the
reference `Tokenizer.encode` (tests/test_tokenizer.py checks this on real and adversarial text).
The chunks are pre-token boundaries of that one pre-tokenizer only: a tokenizer with any other
(or with a normalizer) is encoded by the library itself (`fast_path_applies`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from scaling.base.errors import UserError
from scaling.base.threads import worker_processes

SPECIAL_ROLES = ("pad", "eos", "clm", "unk")   # the lab's special tokens, by what they are for
SPECIAL_TOKENS = ("<pad>", "<eos>", "[CLM]", "<unk>")
# The lab's own layout (trained and bytes tokenizers): the specials first, in role order.
LAB_SPECIAL_IDS = {role: i for i, role in enumerate(SPECIAL_ROLES)}
N_SPECIAL = len(SPECIAL_TOKENS)
BYTES_VOCAB = N_SPECIAL + 256
TRAINED_KINDS = ("bpe", "unigram", "bytes")   # what `scaling prepare --tokenizer KIND` trains (or bytes)
FILE_KINDS = ("hf-json", "sentencepiece")    # a tokenizer file the user brings
KINDS = TRAINED_KINDS + FILE_KINDS
MIN_VOCAB = 300  # specials + 256 byte symbols + a few merges; below this a trained vocab is pointless
MAX_VOCAB = 2**32 - 1

# Unicode White_Space, the set the byte-level regex's `\s` matches (Oniguruma, Unicode mode).
# Python's own `\s` differs (it counts U+001C..U+001F as space), so we spell the class out.
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# We split text into "chunks" whose boundaries are always pre-token boundaries of GPT-2's
# regex (contractions, ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`, `\s+(?!\S)`, `\s+`), so
# encoding chunk by chunk gives exactly the reference encoding. Boundaries we cut at:
#   - before the last character of a whitespace run that is followed by non-whitespace (the
#     regex's own `\s+(?!\S)` rule; that last character joins the next chunk, " word");
#   - between a non-whitespace and a whitespace character;
#   - between ASCII letters, ASCII digits and ASCII punctuation: a letter run ends at a
#     non-letter, a digit run at a non-digit, a punctuation run at a letter or digit; except
#     after an apostrophe followed by a letter or digit ("'s", "'t": contractions), which
#     `P*'[A-Za-z0-9]+` keeps in one chunk.
# A word containing any non-ASCII character is never cut inside (Unicode letter classes are
# where Python's `re` and the Rust regex could disagree); trailing whitespace stays whole.
# Cutting finely matters for the cache: "config.py.sum(x_1)" costs look-ups of "config", ".",
# "py", ... rather than one reference call for a chunk seen once.
_NA = f"[^\x00-\x7f{_WS}]"  # a non-ASCII, non-whitespace character
_P = "[\x00-\x08\x0e-\x1f!-/:-@\\[-`{-\x7f]"  # ASCII neither letter, digit nor whitespace
_CHUNK_RE = re.compile(
    f"[{_WS}]+(?![^{_WS}])"
    # The lookbehind tries the whole-word alternative only at a word's start: linear time.
    f"|[{_WS}]?(?:(?<![^{_WS}])[^{_WS}]*?{_NA}[^{_WS}]*|{_P}*'[A-Za-z0-9]+|[A-Za-z]+|[0-9]+|{_P}+)"
)
# The same without the non-ASCII alternative, for ASCII-only texts.
_ASCII_CHUNK_RE = re.compile(f"[{_WS}]+(?![^{_WS}])|[{_WS}]?(?:{_P}*'[A-Za-z0-9]+|[A-Za-z]+|[0-9]+|{_P}+)")
_WS_CHARS = frozenset(c for c in map(chr, range(0x3001)) if re.fullmatch(f"[{_WS}]", c))
# Chunks missing from the cache are encoded by the reference encoder in a few long strings,
# joined by "\n", not one call per chunk (per-item overhead dominates for short chunks). The
# separator stays its own pre-token when the next chunk starts with at most one whitespace
# character ("\n" + " word" splits as "\n", " word"; "\n" + "word" as "\n", "word"), and every
# chunk ends in non-whitespace, so the boundaries survive; token offsets map ids back to chunks.
# Chunks that are only whitespace (or start with 2+ whitespace characters) go one by one.
_SEP = "\n"
_JOIN_PARTS = 8  # strings per reference call: the library encodes a batch on all cores
CACHE_LIMIT = 4_000_000  # distinct chunks kept; beyond it the cache restarts (bounded memory)


def check_vocab_size(kind: str, vocab_size: int) -> None:
    if kind not in TRAINED_KINDS:
        raise UserError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TRAINED_KINDS)}")
    if kind == "bytes":
        return
    if not isinstance(vocab_size, int) or not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise UserError(f"--vocab-size {vocab_size!r}: a trained {kind} vocabulary needs {MIN_VOCAB} to {MAX_VOCAB} ids")


def dtype_for(vocab_size: int, where: str = "tokenizer") -> np.dtype:
    """The shards' dtype: uint16 up to 65,535 ids, else uint32; more ids than that is refused."""
    if vocab_size > MAX_VOCAB:
        raise UserError(f"{where}: vocabulary of {vocab_size:,} ids does not fit a uint32 shard (at most {MAX_VOCAB:,})")
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def check_ids(ids: np.ndarray, vocab_size: int, where: str = "tokenizer") -> None:
    """Every id inside the vocabulary: an id past it would index outside the embedding, and
    one past the dtype would wrap around silently when cast."""
    if len(ids) and int(ids.max()) >= vocab_size:
        raise UserError(f"{where}: produced id {int(ids.max())}, outside its vocabulary of {vocab_size} ids")


class BytesTokenizer:
    """UTF-8 bytes, id = 4 + byte. Encoding runs at memory speed (numpy.frombuffer)."""

    kind = "bytes"
    vocab_size = BYTES_VOCAB
    dtype = np.dtype(np.uint16)
    special_ids = LAB_SPECIAL_IDS

    def encode_to_array(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' ids concatenated (uint16), and each text's token count."""
        blobs = [t.encode("utf-8") for t in texts]
        lengths = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
        ids = np.frombuffer(b"".join(blobs), dtype=np.uint8).astype(np.uint16)
        ids += N_SPECIAL
        return ids, lengths

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        ids, lengths = self.encode_to_array(texts)
        return [a.tolist() for a in np.split(ids, np.cumsum(lengths)[:-1])] if len(texts) else []

    def decode(self, ids: Iterable[int]) -> str:
        out, buf = [], bytearray()
        for i in ids:
            i = int(i)
            if i >= N_SPECIAL:
                buf.append(i - N_SPECIAL)
            else:  # specials render as their names, like the trained tokenizers' decode
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                out.append(SPECIAL_TOKENS[i])
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)


def fast_path_applies(hf) -> bool:
    """Whether the chunked encoder reproduces `hf` exactly: no normalizer, exactly the
    byte-level pre-tokenizer with GPT-2's regex and no prefix space (the chunks are its
    pre-token boundaries), a deterministic BPE or unigram model, and no added token that
    could be matched inside the text (added specials are not: they enter only by id)."""
    spec = json.loads(hf.to_str())
    pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    return (
        spec.get("normalizer") is None
        and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False)
        and model.get("type") in ("BPE", "Unigram") and not model.get("dropout")
        and all(t.get("special") for t in spec.get("added_tokens") or [])
    )


class TrainedTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` (the lab's byte-level BPE or unigram, or a
    tokenizer.json the user brings) with a fast, exact encoder where it applies.

    `special_ids` None is the lab's layout, checked; a tokenizer the user brings passes its
    own, and `added`, the roles the lab gave new ids (scaling/data/tokenizer_files.py).

    One piece: the fast encoder is only exact together with the special-token and byte
    fallback rules beside it; split, a reader would have to hold two files to check it."""

    def __init__(self, hf, kind: str, special_ids: dict | None = None, added: dict | None = None):
        self.hf = hf
        self.kind = kind
        self.added = dict(added or {})   # role -> id the lab added to a user's tokenizer
        # Literal "<eos>" in a document is text, not a separator: specials enter only by id.
        hf.encode_special_tokens = True
        # A tokenizer.json may carry a model's truncation or padding: a document is encoded whole.
        hf.no_truncation()
        hf.no_padding()
        if special_ids is None:
            for i, tok in enumerate(SPECIAL_TOKENS):
                if hf.token_to_id(tok) != i:
                    raise UserError(f"tokenizer: special token {tok!r} must have id {i}, has {hf.token_to_id(tok)}")
            special_ids = LAB_SPECIAL_IDS
        self.special_ids = dict(special_ids)
        # Ids may have holes: the embedding must cover the largest one.
        self.vocab_size = max(hf.get_vocab_size(with_added_tokens=True), max(hf.get_vocab(with_added_tokens=True).values()) + 1)
        self.fast = fast_path_applies(hf)
        # The library's encoder runs on all cores itself; the fast one runs one process per core.
        self.parallel_inside = not self.fast
        # chunk -> k; chunk k's ids are _flat[_starts[k]:_starts[k+1]]
        self.clear_cache()
        self.dtype = dtype_for(self.vocab_size)

    # The reference encoder: what `encode_to_array` must reproduce exactly.
    def encode_reference(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def _reference_chunks(self, chunks: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Reference encodings of distinct chunks: (all ids concatenated, ids per chunk)."""
        ws = _WS_CHARS
        lengths = np.zeros(len(chunks), dtype=np.int64)
        parts: list[tuple[np.ndarray, np.ndarray]] = []  # (chunk index per token, ids), in any order
        alone = [i for i, c in enumerate(chunks) if c[-1] in ws or (len(c) > 1 and c[0] in ws and c[1] in ws)]
        if alone:
            encs = self.hf.encode_batch_fast([chunks[i] for i in alone], add_special_tokens=False)
            for i, e in zip(alone, encs):
                parts.append((np.full(len(e.ids), i, dtype=np.int64), np.asarray(e.ids, dtype=np.int64)))
        alone_set = set(alone)
        joinable = [i for i in range(len(chunks)) if i not in alone_set] if alone else list(range(len(chunks)))
        groups = [joinable[k::_JOIN_PARTS] for k in range(_JOIN_PARTS)]
        groups = [g for g in groups if g]
        texts = [_SEP.join(chunks[i] for i in g) for g in groups]
        for g, e in zip(groups, self.hf.encode_batch(texts, add_special_tokens=False)):
            ids = np.asarray(e.ids, dtype=np.int64)
            tok_start = np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
            clen = np.fromiter((len(chunks[i]) for i in g), dtype=np.int64, count=len(g))
            cstart = np.cumsum(clen + 1) - (clen + 1)
            which = np.searchsorted(cstart, tok_start, side="right") - 1
            inside = tok_start < cstart[which] + clen[which]  # tokens of the separators are not
            parts.append((np.asarray(g, dtype=np.int64)[which[inside]], ids[inside]))
        owner = np.concatenate([p[0] for p in parts])
        ids = np.concatenate([p[1] for p in parts])
        order = np.argsort(owner, kind="stable")  # stable: keeps each chunk's tokens in order
        lengths += np.bincount(owner, minlength=len(chunks))
        return ids[order], lengths

    def _add_chunks(self, missing: list[str]) -> None:
        flat, lengths = self._reference_chunks(missing)
        self._flat = np.concatenate([self._flat, flat])
        self._starts = np.concatenate([self._starts, self._starts[-1] + np.cumsum(lengths)])

    def encode_to_array(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' ids concatenated (uint16/uint32), and each text's token count."""
        if not self.fast:
            return self._library_encode(texts)
        findall, ascii_findall = _CHUNK_RE.findall, _ASCII_CHUNK_RE.findall
        chunks: list[str] = []
        n_chunks = np.empty(len(texts), dtype=np.int64)
        for d, text in enumerate(texts):
            cs = ascii_findall(text) if text.isascii() else findall(text)
            n_chunks[d] = len(cs)
            chunks += cs
        index = self._chunk_index
        if len(index) > CACHE_LIMIT:
            self.clear_cache()
            index = self._chunk_index
        new = [c for c in dict.fromkeys(chunks) if c not in index]
        if new:
            index.update(zip(new, range(len(index), len(index) + len(new))))
            self._add_chunks(new)
        cid = np.fromiter(map(index.__getitem__, chunks), dtype=np.int64, count=len(chunks))
        starts = self._starts[cid]
        lens = self._starts[cid + 1] - starts
        # Gather flat[starts[k] : starts[k] + lens[k]] for every chunk k, in order, without a loop:
        # position j of the output reads flat[starts[k] + (j - first output slot of k)].
        ends = np.cumsum(lens)
        gather = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) + np.repeat(starts - (ends - lens), lens)
        ids = self._flat[gather]
        check_ids(ids, self.vocab_size)
        ids = ids.astype(self.dtype)
        tok_end = np.concatenate([[0], ends])[np.cumsum(n_chunks)]
        lengths = np.diff(np.concatenate([[0], tok_end]))
        return ids, lengths

    def _library_encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        encs = self.hf.encode_batch_fast(list(texts), add_special_tokens=False)   # no offsets: faster
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
        check_ids(ids, self.vocab_size)
        return ids.astype(self.dtype), lengths

    def clear_cache(self) -> None:
        self._chunk_index = {}
        self._flat = np.zeros(0, dtype=np.int64)
        self._starts = np.zeros(1, dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        ids, lengths = self.encode_to_array(texts)
        return [a.tolist() for a in np.split(ids, np.cumsum(lengths)[:-1])] if len(texts) else []

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)


def n_workers() -> int:
    """Tokenizing processes (threads.worker_processes)."""
    return worker_processes()


_POOL_TOKENIZER = None  # set in the parent before forking, inherited by the workers


def _pool_init() -> None:
    # Each worker is one core already; the library's own thread pool would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _pool_encode(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return _POOL_TOKENIZER.encode_to_array(texts)


def encode_batches(tok, batches: Sequence[Sequence[str]], workers: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`tok.encode_to_array` of each batch, in order, on `workers` forked processes.

    Each worker keeps its own chunk cache (the cold misses are paid once per worker; they are a
    small share of the time). Bytes, a tokenizer that encodes on all cores itself
    (`parallel_inside`), one core, a single batch, or no fork(): in this process.
    """
    global _POOL_TOKENIZER
    import multiprocessing as mp

    workers = n_workers() if workers is None else workers
    workers = min(workers, len(batches))
    # Bytes run at memory speed; a library that encodes on all cores itself is not forked.
    if workers <= 1 or isinstance(tok, BytesTokenizer) or getattr(tok, "parallel_inside", False) or "fork" not in mp.get_all_start_methods():
        for batch in batches:
            yield tok.encode_to_array(batch)
        return
    from concurrent.futures import ProcessPoolExecutor

    _POOL_TOKENIZER = tok
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_pool_init) as pool:
            yield from pool.map(_pool_encode, batches)
    finally:
        _POOL_TOKENIZER = None


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int, show_progress: bool = False):
    """Train a byte-level BPE or unigram vocabulary of `vocab_size` ids (specials included)."""
    check_vocab_size(kind, vocab_size)
    if kind == "bytes":
        return BytesTokenizer()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if kind == "bpe":
        hf = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=alphabet,
            show_progress=show_progress,
        )
    else:
        hf = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            unk_token="<unk>",
            initial_alphabet=alphabet,
            show_progress=show_progress,
        )
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(texts, trainer=trainer)
    return TrainedTokenizer(hf, kind)


def parse_hf_json(text: str, where: str = "tokenizer.json"):
    """A `tokenizers.Tokenizer` from a tokenizer.json's text; the library's refusal, one line."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(text)
    except Exception as e:  # the library raises plain Exception on bad JSON
        raise UserError(f"{where}: not a valid tokenizer file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def tokenizer_from_json(text: str, kind: str, where: str = "tokenizer.json") -> TrainedTokenizer:
    """One of the lab's trained tokenizers (its specials at ids 0-3, checked) from its JSON."""
    return TrainedTokenizer(parse_hf_json(text, where), kind)
