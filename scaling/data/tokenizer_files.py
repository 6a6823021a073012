"""A tokenizer on disk: the file a user brings to `scaling prepare --tokenizer PATH` (a Hugging
Face tokenizer.json, a SentencePiece .model, or a shard directory whose tokenizer to reuse),
and the one a shard directory keeps beside its shards (`load_tokenizer`).

A tokenizer's own special tokens are used where it has them; the lab's roles it lacks (pad,
eos, the [CLM] task token, unk) get new ids after its vocabulary. What a tokenizer.json's
specials are is read from the file: a role's token must be one of its special added tokens
(`ROLE_NAMES`, first match; unk may also be its model's unk token), since an ordinary piece
could be produced from text and would then be masked as padding or cut documents apart.
The file is copied beside the shards byte for byte, with its sha256 in meta.json; the ids
added to it are a function of the file, recomputed when it is loaded and checked against
meta.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from scaling.base.errors import UserError
from scaling.data.layout import read_meta
from scaling.data.spm import SentencePieceTokenizer, load_processor
from scaling.data.tokenizer import (
    SPECIAL_ROLES,
    TRAINED_KINDS,
    BytesTokenizer,
    TrainedTokenizer,
    parse_hf_json,
    tokenizer_from_json,
)

FILE_NAMES = {"hf-json": "tokenizer.json", "sentencepiece": "tokenizer.model", "bpe": "tokenizer.json",
              "unigram": "tokenizer.json", "bytes": None}
# A tokenizer.json's token for each role, in order of preference (the spellings of T5, BART,
# GPT-2, Llama 3, BERT); a role none of them fills is added as the first spelling free.
ROLE_NAMES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "eos": ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>", "[SEP]"),
    "clm": ("[CLM]",),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
}
ADDED_FALLBACK = {"pad": "<|scaling-pad|>", "eos": "<|scaling-eos|>", "clm": "<|scaling-clm|>", "unk": "<|scaling-unk|>"}


@dataclass(frozen=True)
class TokenizerSource:
    """A tokenizer the user brings: the object, its kind, the file to copy beside the shards
    (None for bytes) under `file_name`, the file's sha256, and where it came from."""

    tokenizer: object
    kind: str
    path: Path | None
    file_name: str | None
    sha256: str | None
    source: str

    def record(self) -> dict:
        """meta.json's `tokenizer_file`."""
        return {"file": self.file_name, "sha256": self.sha256, "source": self.source,
                "added": dict(getattr(self.tokenizer, "added", {}))}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror})") from None


def _model_unk(spec: dict, vocab: dict) -> int | None:
    model = spec.get("model") or {}
    if model.get("type") == "Unigram":
        return model.get("unk_id")
    tok = model.get("unk_token")
    return vocab.get(tok) if tok is not None else None


def hf_tokenizer(text: str, where: str) -> TrainedTokenizer:
    """A user's tokenizer.json, its specials found (`ROLE_NAMES`) or added after its vocabulary."""
    from tokenizers import AddedToken

    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not a tokenizer file (not valid JSON: {e.msg} at line {e.lineno})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise UserError(f"{where}: JSON, but not a Hugging Face tokenizer.json (no \"model\")")
    hf = parse_hf_json(text, where)   # the library's own check of the file
    model = spec["model"]
    if model.get("dropout"):
        raise UserError(f"{where}: BPE dropout {model['dropout']} makes tokenizing random; set it to null")
    vocab = hf.get_vocab(with_added_tokens=True)
    special = {t["content"]: t["id"] for t in spec.get("added_tokens") or [] if t.get("special")}
    found: dict[str, int] = {}
    for role in SPECIAL_ROLES:
        hit = next((special[n] for n in ROLE_NAMES[role] if n in special), None)
        if hit is None and role == "unk":
            hit = _model_unk(spec, vocab)
        if hit is not None:
            found[role] = hit
    added: dict[str, int] = {}
    for role in SPECIAL_ROLES:
        if role not in found:
            name = next(n for n in (*ROLE_NAMES[role], ADDED_FALLBACK[role]) if n not in vocab)
            hf.add_special_tokens([AddedToken(name, special=True, normalized=False)])
            new = hf.token_to_id(name)
            if new in vocab.values():   # the library fills the count of ids, not past the largest
                raise UserError(f"{where}: its ids have gaps (largest {max(vocab.values())} among {len(vocab)} tokens), "
                                f"so {name!r} for {role} would share id {new} with "
                                f"{next(t for t, i in vocab.items() if i == new)!r}; "
                                f"add a special {ROLE_NAMES[role][0]!r} token to the file yourself")
            found[role] = added[role] = new
            vocab[name] = new
    return TrainedTokenizer(hf, "hf-json", special_ids={r: found[r] for r in SPECIAL_ROLES}, added=added)


def _from_file(path: Path) -> tuple[object, str]:
    """A tokenizer file's tokenizer and kind, told apart by content (not by name)."""
    data = _read(path, "tokenizer")
    if data.lstrip()[:1] == b"{":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a tokenizer file (starts like JSON, but is not UTF-8)") from None
        return hf_tokenizer(text, str(path)), "hf-json"
    try:
        sp = load_processor(data, str(path))
    except UserError:
        raise UserError(f"{path}: not a tokenizer file (neither a Hugging Face tokenizer.json nor a "
                        "SentencePiece .model)") from None
    return SentencePieceTokenizer(sp, str(path)), "sentencepiece"


def open_tokenizer(spec: str) -> TokenizerSource:
    """`--tokenizer PATH`: a tokenizer.json, a SentencePiece .model, or a shard directory."""
    path = Path(spec)
    if not path.exists():
        raise UserError(f"--tokenizer {spec}: no such file or shard directory; choose one of "
                        f"{', '.join(TRAINED_KINDS)}, or give a tokenizer.json, a SentencePiece .model or a shard directory")
    if path.is_dir():
        if not (path / "meta.json").is_file():
            raise UserError(f"--tokenizer {spec}: a directory, but not a shard directory (no meta.json); "
                            "give a tokenizer file or a shard directory")
        tok = load_tokenizer(path)
        name = FILE_NAMES[tok.kind]
        digest = hashlib.sha256(_read(path / name, "tokenizer")).hexdigest() if name else None
        return TokenizerSource(tok, tok.kind, path / name if name else None, name, digest, str(path.resolve()))
    tok, kind = _from_file(path)
    digest = hashlib.sha256(_read(path, "tokenizer")).hexdigest()
    return TokenizerSource(tok, kind, path, FILE_NAMES[kind], digest, str(path.resolve()))


def load_tokenizer(path):
    """The tokenizer of a shard directory, as it tokenized the shards: `.encode_batch(texts)`,
    `.decode(ids)`, `.special_ids`, `.vocab_size`. Its file is checked against meta.json
    (sha256 where recorded, vocabulary and special ids)."""
    path = Path(path)
    meta = read_meta(path)
    kind = meta["tokenizer"]
    if kind == "bytes":
        tok = BytesTokenizer()
    else:
        file = path / FILE_NAMES[kind]
        if not file.is_file():
            raise UserError(f"{file}: missing; the shard directory {path} has no tokenizer")
        data = _read(file, "tokenizer")
        recorded = (meta.get("tokenizer_file") or {}).get("sha256")
        if recorded and hashlib.sha256(data).hexdigest() != recorded:
            raise UserError(f"{file}: sha256 differs from meta.json's: not the tokenizer these shards were made with")
        if kind == "sentencepiece":
            tok = SentencePieceTokenizer(load_processor(data, str(file)), str(file))
        elif kind == "hf-json":
            tok = hf_tokenizer(data.decode("utf-8", errors="replace"), str(file))
        else:
            tok = tokenizer_from_json(data.decode("utf-8", errors="replace"), kind, str(file))
    ids = {role: meta[f"{role}_id"] for role in SPECIAL_ROLES}
    if tok.vocab_size != meta["vocab_size"] or tok.special_ids != ids:
        raise UserError(f"{path}: its tokenizer has {tok.vocab_size} ids and specials {tok.special_ids}, "
                        f"meta.json says {meta['vocab_size']} and {ids}")
    return tok
