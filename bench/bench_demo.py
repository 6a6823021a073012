"""FLOPs per wall-second of the demo's runs, before and after the demo was re-sized.

    python bench/bench_demo.py [--steps 150] [--json FILE]

The old demo (sweeps/demo-cpu.toml before this benchmark existed: 12.9K-81.8K parameters,
batch 8 x 32 bytes) spent most of each step on per-step overhead. The current one trains
larger models on larger steps. Each row trains one of a sweep's sizes through TrainingRun
(Lightning, the real objective and data path) for a fixed number of steps on ONE thread, as
the demo runs them, and reports the median of the logged intervals after warm-up: FLOP/s by
the model's analytic count, and its share of this machine's one-thread fp32 matmul peak,
measured once (best of five trials, cached; see scaling.train.speed.measure_cpu_peak).

A second table splits a step's time into a fixed per-step cost and a per-sequence cost, by
training two of the demo's sizes at several batch sizes and fitting time = a + b x batch:
`a` is what cutting per-step overhead (dispatch, hooks, the optimizer, batch building) could
win at most; FLOPs per sequence / b is the rate a step would reach at an infinite batch, the
ceiling for these shapes on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

# Every row on one thread, as the demo's runs (cpus_per_task = 1); the run's own thread rule
# would give the 600-step demo's larger sizes two. Set before torch loads.
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.base.config import TrainConfig  # noqa: E402
from scaling.train.run import TrainingRun  # noqa: E402
from scaling.train.speed import measure_cpu_peak  # noqa: E402

# (label, size, seq_len, batch): the old demo's four sizes; the 600-step demo's range at a
# batch of 32 x 64; the current demo (3,000 steps of 32 bytes, 1+1 layers, centred on 15
# tokens/param): the middle size of each of its five budgets and the smallest and largest
# sizes of the sweep, each at the batch the sweep gives it (its runs take 2-48 sequences a step).
BEFORE = [("old demo", s, 32, 8) for s in ("13K", "25K", "40K", "80K")]
MIDDLE = [("600-step", s, 64, 32) for s in ("25K", "60K", "120K", "250K", "500K")]
AFTER = [("demo", s, 32, b) for s, b in (("13.3K", 13), ("33.4K", 5), ("47.4K", 7), ("67.4K", 10),
                                          ("95.6K", 15), ("136K", 21), ("339K", 9))]


def measure(size: str, seq_len: int, batch: int, steps: int, data: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(params=size, tokens=steps * seq_len * batch, out=f"{tmp}/run", data=data,
                          seq_len=seq_len, batch_size=batch, val_points=2, val_examples=64,
                          log_every=10, progress=False, checkpoint_every_s=1e9)
        rec = TrainingRun(cfg).fit()
        import polars as pl

        m = pl.read_parquet(f"{tmp}/run/metrics.parquet").filter(pl.col("split") == "train")
    rows = m.sort("step").tail(max(1, m.height - 3))  # leave out warm-up intervals
    tps = statistics.median(rows["tokens_per_s"].to_list())
    flops = tps * rec["flops_per_token"]
    return {"size": size, "params": rec["n_params"], "seq_len": seq_len, "batch": batch,
            "tokens_per_s": tps, "flops_per_s": flops}


# Two of the demo's rows (the middle sizes of its 1e11 and 1.6e12 budgets), each at batches
# around the ones the sweep gives them.
SPLIT = (AFTER[1], AFTER[5])
SPLIT_BATCHES = (5, 20, 80)


def step_split(size: str, seq_len: int, steps: int, data: str) -> dict:
    """Fit step time = a + b * batch over SPLIT_BATCHES (least squares)."""
    pts = []
    for batch in SPLIT_BATCHES:
        r = measure(size, seq_len, batch, steps, data)
        step_s = seq_len * batch / r["tokens_per_s"]
        pts.append((batch, step_s, r["flops_per_s"] * step_s))
    xs, ts = [p[0] for p in pts], [p[1] for p in pts]
    mx, mt = statistics.fmean(xs), statistics.fmean(ts)
    b = sum((x - mx) * (t - mt) for x, t in zip(xs, ts)) / sum((x - mx) ** 2 for x in xs)
    a = mt - b * mx
    flops_per_seq = pts[0][2] / pts[0][0]
    return {"size": size, "points": [{"batch": x, "step_s": t, "flops_per_s": f / t} for x, t, f in pts],
            "overhead_s": a, "per_sequence_s": b, "ceiling_flops_per_s": flops_per_seq / b}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="steps per size (default 150)")
    ap.add_argument("--data", default="data/shards/default-bytes",
                    help="byte-level shards (scaling prepare --corpus default --tokenizer bytes --out ...)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if not Path(args.data, "meta.json").exists():
        print(f"error: {args.data}: no token shards; run `scaling prepare --corpus default --tokenizer bytes "
              f"--out {args.data}` first", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    peak = measure_cpu_peak(seconds=0.5)
    print(f"one thread; fp32 matmul peak (1024^3, measured once, best of 5): {peak / 1e9:.0f} GFLOP/s")
    print(f"{'sweep':10}{'size':>6}{'params':>9}{'batch':>8}{'tokens/s':>10}{'GFLOP/s':>9}{'of peak':>9}")
    out = []
    for label, size, seq_len, batch in BEFORE + MIDDLE + AFTER:
        r = {"sweep": label, **measure(size, seq_len, batch, args.steps, args.data), "peak": peak}
        out.append(r)
        print(f"{label:10}{size:>6}{r['params']:>9,}{f'{batch}x{seq_len}':>8}{r['tokens_per_s']:>10,.0f}"
              f"{r['flops_per_s'] / 1e9:>9.1f}{r['flops_per_s'] / peak:>9.1%}", flush=True)
    old = statistics.median(r["flops_per_s"] for r in out if r["sweep"] == "old demo")
    mid = statistics.median(r["flops_per_s"] for r in out if r["sweep"] == "600-step")
    new = statistics.median(r["flops_per_s"] for r in out if r["sweep"] == "demo")
    print(f"median FLOP/s: old demo {old / 1e9:.1f} G, 600-step demo {mid / 1e9:.1f} G, "
          f"demo {new / 1e9:.1f} G: {new / old:.1f}x the old demo")
    print(f"\nstep time = a + b x batch (batches {'/'.join(map(str, SPLIT_BATCHES))}, {args.steps} steps each); "
          f"the ceiling is the rate at an infinite batch, against the old demo's sizes in this run")
    print(f"{'size':>6}{'a (ms)':>9}{'b (ms/seq)':>12}{'ceiling GFLOP/s':>17}{'of peak':>9}{'x old demo':>12}")
    split = []
    for _, size, seq_len, _ in SPLIT:
        r = step_split(size, seq_len, args.steps, args.data)
        split.append(r)
        print(f"{size:>6}{r['overhead_s'] * 1e3:>9.2f}{r['per_sequence_s'] * 1e3:>12.3f}"
              f"{r['ceiling_flops_per_s'] / 1e9:>17.1f}{r['ceiling_flops_per_s'] / peak:>9.1%}"
              f"{r['ceiling_flops_per_s'] / old:>12.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": out, "ratio": new / old, "ratio_600_step": mid / old,
                                               "step_split": split}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
