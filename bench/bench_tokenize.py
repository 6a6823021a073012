"""Tokenizing throughput: the lab's encoder against the library's own `encode_batch`.

Prints MB/s (UTF-8 bytes of input per second) for a trained BPE and unigram vocabulary and
for bytes, on the embedded default corpus (built into the cache on first use), with a cold
cache (a fresh tokenizer: every distinct chunk goes to the reference encoder once) and a warm
one. The target is >= 5 MB/s cold on two cores for an 8K-32K vocabulary.

    python bench/bench_tokenize.py [--vocab 8192 32768] [--mb 40]

"prepare MB/s" is the path `scaling prepare` takes: 4 MB batches on one forked worker per core,
each with a cold cache.

Numbers depend on what else runs: the 1-minute load average is printed beside them, and
"cold cpu" divides by the process's CPU time instead of wall time: on a shared machine it is
closer to what an idle one gives (it undercounts multi-threaded parts: the library's batch
encoder runs on every core, so its wall-clock rate on idle cores can be up to cores x higher).
"""

from __future__ import annotations

import argparse
import os
import time


def _mbps(n_bytes: int, seconds: float) -> float:
    return n_bytes / seconds / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[8192, 32768])
    ap.add_argument("--mb", type=float, default=40.0, help="MB of corpus text to encode")
    ap.add_argument("--reference-mb", type=float, default=8.0, help="MB for the (slow) library encoder")
    args = ap.parse_args()

    from scaling.data.corpus import load_default_corpus
    from scaling.data.tokenizer import BytesTokenizer, encode_batches, n_workers, tokenizer_from_json, train_tokenizer

    docs, prov = load_default_corpus()
    budget, take = int(args.mb * 1e6), []
    for d in docs:
        take.append(d)
        budget -= len(d)
        if budget <= 0:
            break
    docs = take
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    ref_docs = docs[: max(1, int(len(docs) * min(1.0, args.reference_mb / args.mb)))]
    ref_bytes = sum(len(d.encode("utf-8")) for d in ref_docs)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"corpus: {len(docs)} documents, {n_bytes / 1e6:.1f} MB (default corpus {prov['sha256'][:12]}); "
          f"{cores} cores ({n_workers()} workers); load average {os.getloadavg()[0]:.2f}")
    print(f"{'tokenizer':<16}{'vocab':>7}{'train s':>9}{'cold MB/s':>11}{'cold cpu':>10}{'warm MB/s':>11}"
          f"{'prepare MB/s':>14}{'library MB/s':>14}{'library cpu':>13}{'bytes/token':>13}")
    batches, i = [], 0
    while i < len(docs):  # ~4 MB batches, as scaling prepare makes them
        j, size = i, 0
        while j < len(docs) and size < 4e6:
            size += len(docs[j])
            j += 1
        batches.append(docs[i:j])
        i = j

    for kind in ("bpe", "unigram"):
        for vocab in args.vocab:
            t = time.perf_counter()
            tok = train_tokenizer(kind, docs, vocab)
            train_s = time.perf_counter() - t
            t, c = time.perf_counter(), time.process_time()
            ids, _ = tok.encode_to_array(docs)
            cold, cold_cpu = time.perf_counter() - t, time.process_time() - c
            t = time.perf_counter()
            tok.encode_to_array(docs)
            warm = time.perf_counter() - t
            fresh = tokenizer_from_json(tok.hf.to_str(), kind)
            t = time.perf_counter()
            for _ in encode_batches(fresh, batches):
                pass
            par = time.perf_counter() - t
            t, c = time.perf_counter(), time.process_time()
            tok.encode_reference(ref_docs)
            ref, ref_cpu = time.perf_counter() - t, time.process_time() - c
            print(f"{kind:<16}{vocab:>7}{train_s:>9.1f}{_mbps(n_bytes, cold):>11.1f}{_mbps(n_bytes, cold_cpu):>10.1f}"
                  f"{_mbps(n_bytes, warm):>11.1f}{_mbps(n_bytes, par):>14.1f}{_mbps(ref_bytes, ref):>14.1f}{_mbps(ref_bytes, ref_cpu):>13.1f}"
                  f"{n_bytes / len(ids):>13.2f}")

    tok = BytesTokenizer()
    t = time.perf_counter()
    ids, _ = tok.encode_to_array(docs)
    dt = time.perf_counter() - t
    print(f"{'bytes':<16}{260:>7}{0:>9.1f}{_mbps(n_bytes, dt):>11.1f}{'':>10}{'':>11}{'':>14}{'':>14}{'':>13}{n_bytes / len(ids):>13.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
