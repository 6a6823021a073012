"""Tokenizing throughput of a tokenizer the user brings, on the path `scaling prepare` takes
(`encode_batches` over ~4 MB batches of the embedded default corpus).

Three files are made from a sample of the corpus, each with --vocab ids: a byte-level BPE
tokenizer.json (GPT-2's kind: the lab's fast encoder applies), the same file with an NFC
normalizer added (same model, so the library's own encoder runs: the price of a tokenizer the
fast path cannot reproduce), and a SentencePiece unigram .model (T5's kind, T5's ids; the
library encodes on its own threads). Prints MB/s (UTF-8 input bytes per wall second) and the
1-minute load average, since the machine may be shared, and MB per CPU second (this process
and its workers), which a shared machine disturbs less: on idle cores the wall rate of a
parallel encoder approaches cores x that.

    python bench/bench_tokenize_external.py [--mb 8] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time
from pathlib import Path


def _batches(docs, size=4e6):
    out, cur, n = [], [], 0
    for d in docs:
        cur.append(d)
        n += len(d)
        if n >= size:
            out.append(cur)
            cur, n = [], 0
    return out + ([cur] if cur else [])


def _files(sample, vocab: int, d: Path) -> dict[str, Path]:
    import sentencepiece as spm
    from tokenizers import normalizers

    from scaling.data.tokenizer import train_tokenizer

    bpe = train_tokenizer("bpe", sample, vocab).hf
    bpe.save(str(d / "bpe.json"))
    bpe.normalizer = normalizers.NFC()
    bpe.save(str(d / "bpe-nfc.json"))
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sample), model_writer=buf, vocab_size=vocab,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   minloglevel=2, max_sentence_length=1 << 20, input_sentence_size=200_000,
                                   shuffle_input_sentence=True)
    (d / "t5.model").write_bytes(buf.getvalue())
    return {"tokenizer.json, byte-level BPE": d / "bpe.json", "tokenizer.json + NFC": d / "bpe-nfc.json",
            "SentencePiece unigram": d / "t5.model"}


def _cpu() -> float:
    """CPU seconds of this process and its reaped workers (the forked pool is reaped per pass)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=8.0, help="MB of corpus text to encode")
    ap.add_argument("--vocab", type=int, default=8192)
    args = ap.parse_args()

    from scaling.data.corpus import load_default_corpus
    from scaling.data.tokenizer import encode_batches, n_workers
    from scaling.data.tokenizer_files import open_tokenizer

    docs, _ = load_default_corpus()
    budget, take = int(args.mb * 1e6), []
    for doc in docs:
        take.append(doc)
        budget -= len(doc)
        if budget <= 0:
            break
    n_bytes = sum(len(x.encode("utf-8")) for x in take)
    batches = _batches(take)
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(take[: max(1, len(take) // 4)], args.vocab, Path(tmp))
        print(f"{len(take)} documents, {n_bytes / 1e6:.1f} MB; {n_workers()} workers; "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'tokenizer':<32}{'encoder':>10}{'MB/s':>8}{'MB/cpu-s':>10}{'bytes/token':>13}")
        for name, path in files.items():
            tok = open_tokenizer(str(path)).tokenizer
            c0, t0 = _cpu(), time.perf_counter()
            n_tok = sum(len(ids) for ids, _ in encode_batches(tok, batches))
            dt, cpu = time.perf_counter() - t0, _cpu() - c0
            how = "fast" if getattr(tok, "fast", False) else "library"
            print(f"{name:<32}{how:>10}{n_bytes / dt / 1e6:>8.1f}{n_bytes / cpu / 1e6:>10.1f}{n_bytes / n_tok:>13.2f}")
        print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
