"""Threads against step size: where a second CPU thread starts to pay (scaling/threads.py).

    python bench/bench_threads.py [--busy] [--json FILE]

For model sizes from 20K to 5M parameters (bytes vocabulary, 32 x 64 tokens a step), the
median step time of forward + backward + fused AdamW on 1 and on 2 threads, with idle threads
waiting passively (OMP_WAIT_POLICY=PASSIVE, as every run here does). --busy runs one
CPU-bound process beside the measurement, the way a laptop's other work would.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scaling  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
import torch  # noqa: E402

from scaling.train.model import EncoderDecoder, ModelConfig, objective_lengths  # noqa: E402
from scaling.base.threads import FLOPS_PER_THREAD, threads_for  # noqa: E402

SIZES = ("20K", "100K", "300K", "1M", "2M", "5M")


def _spin(stop):
    x = 0
    while not stop.is_set():
        x += 1


def step_time(size: str, threads: int, batch: int = 32, seq_len: int = 64, steps: int = 12) -> tuple[float, float]:
    torch.set_num_threads(threads)
    cfg = ModelConfig.from_params(size, vocab_size=260, max_len=seq_len)
    m = EncoderDecoder(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)   # as the runs do (scaling/loop.py)
    enc_len, dec_len = objective_lengths(seq_len)
    g = torch.Generator().manual_seed(0)
    enc = torch.randint(4, 260, (batch, enc_len), generator=g)
    dec = torch.randint(4, 260, (batch, dec_len), generator=g)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        m(enc, dec, dec).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), float(cfg.train_flops(enc_len, dec_len) * batch)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", action="store_true", help="one CPU-bound process beside the measurement")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    stop = mp.Event()
    busy = mp.Process(target=_spin, args=(stop,), daemon=True) if args.busy else None
    if busy:
        busy.start()
    print(f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"{'one busy process beside' if busy else 'nothing else of ours running'}; "
          f"rule: a thread per {FLOPS_PER_THREAD:.2g} FLOPs of a step")
    print(f"{'size':>6}{'GFLOP/step':>12}{'1 thread ms':>13}{'2 threads ms':>14}{'2 vs 1':>8}{'rule':>6}")
    rows = []
    try:
        for size in SIZES:
            t1, f = step_time(size, 1)
            t2, _ = step_time(size, 2)
            rule = threads_for(f, 2)
            rows.append({"size": size, "flops_per_step": f, "t1_s": t1, "t2_s": t2, "rule": rule})
            print(f"{size:>6}{f / 1e9:>12.2f}{t1 * 1e3:>13.1f}{t2 * 1e3:>14.1f}{t1 / t2:>8.2f}x{rule:>5}", flush=True)
    finally:
        stop.set()
    if args.json:
        Path(args.json).write_text(json.dumps({"busy": args.busy, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
