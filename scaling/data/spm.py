"""A SentencePiece `.model` (T5's and AlexaTM's kind of tokenizer), with the interface of the
lab's tokenizers (scaling/data/tokenizer.py): `.vocab_size`, `.special_ids`, `.encode_batch`,
`.encode_to_array`, `.decode`.

The model's own pad, eos (`</s>`) and unk are used where it has them (T5's: pad 0, eos 1,
unk 2); a `[CLM]` control symbol too. The lab's roles it lacks get ids after its last piece, in
role order (pad, eos, clm, unk): SentencePiece cannot grow a model, so this wrapper owns them,
and the model file stays byte for byte the user's. The library encodes (on `n_workers()`
threads of its own); bos and eos are never added to a document, and control symbols written
in the text (a literal "</s>") are text, as they are for the lab's tokenizers.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from scaling.base.errors import UserError
from scaling.data.tokenizer import SPECIAL_ROLES, check_ids, dtype_for, n_workers

# The names the added ids decode to, as T5's own specials are spelled.
ADDED_NAMES = {"pad": "<pad>", "eos": "</s>", "clm": "[CLM]", "unk": "<unk>"}


def load_processor(data: bytes, where: str):
    """The SentencePiece processor of a model file's bytes; anything else, one line."""
    import sentencepiece   # here, not above: only a .model tokenizer needs it

    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(data)
    except Exception as e:  # the library raises RuntimeError (and others) for a bad proto
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{where}: not a SentencePiece model ({reason[:120]})") from None
    if sp.get_piece_size() == 0:
        raise UserError(f"{where}: not a SentencePiece model (no pieces)")
    return sp


class SentencePieceTokenizer:
    kind = "sentencepiece"
    parallel_inside = True   # the library's own threads: not forked (scaling/data/tokenizer.py)

    def __init__(self, sp, where: str = "tokenizer.model"):
        self.sp = sp
        self.base_vocab = sp.get_piece_size()
        own = {"pad": sp.pad_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "clm": self._control("[CLM]")}
        self.special_ids: dict[str, int] = {}
        self.added: dict[str, int] = {}   # role -> id past the model's pieces
        for role in SPECIAL_ROLES:
            if own[role] is not None and 0 <= own[role] < self.base_vocab:
                self.special_ids[role] = own[role]
            else:
                self.special_ids[role] = self.added[role] = self.base_vocab + len(self.added)
        self.vocab_size = self.base_vocab + len(self.added)
        self.dtype = dtype_for(self.vocab_size, where)
        self._names = {i: self._name(role, i) for role, i in self.special_ids.items()}

    def _control(self, piece: str) -> int | None:
        """The id of a control symbol (never produced from text), or None."""
        i = self.sp.piece_to_id(piece)
        return i if self.sp.id_to_piece(i) == piece and self.sp.is_control(i) else None

    def _name(self, role: str, i: int) -> str:
        return ADDED_NAMES[role] if role in self.added else self.sp.id_to_piece(i)

    def encode_to_array(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' ids concatenated (uint16/uint32), and each text's token count."""
        encs = self.sp.encode(list(texts), out_type=int, add_bos=False, add_eos=False, num_threads=n_workers())
        lengths = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))
        ids = np.fromiter((i for e in encs for i in e), dtype=np.int64, count=int(lengths.sum()))
        check_ids(ids, self.vocab_size)
        return ids.astype(self.dtype), lengths

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e) for e in self.sp.encode(list(texts), out_type=int, add_bos=False, add_eos=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text; a special id renders as its name ("</s>", "[CLM]"), as the lab's tokenizers do
        (SentencePiece itself would drop pad and eos and write unk as " ⁇ ")."""
        out, run = [], []
        for i in map(int, ids):
            if i in self._names:
                out.append(self.sp.decode(run))
                out.append(self._names[i])
                run = []
            else:
                run.append(i)
        out.append(self.sp.decode(run))
        return "".join(out)
