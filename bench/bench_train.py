"""Training throughput: tokens/s and MFU of real `scaling train` runs, against this machine's
own matmul peak.

    python bench/bench_train.py                      # CPU: fp32, sizes 5M 10M 20M
    python bench/bench_train.py --gpu                # GPU: bf16 + torch.compile, 50M 300M 1B

Each size trains through TrainingRun (Lightning, the real objective and data path) for a
fixed number of steps; tokens/s and MFU are the median of the logged intervals after the
first two (warm-up, compilation). MFU counts the model's analytic FLOPs (model.py) against
the measured fp32 matmul peak on CPU, and against the chip's dense bf16 peak on GPU (989
TFLOP/s for an H100 SXM). The time spent building a batch of the mixed objective is
reported as a share of the step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.base.config import TrainConfig  # noqa: E402
from scaling.data.objectives import MixedObjective, ObjectiveConfig  # noqa: E402
from scaling.train.run import TrainingRun  # noqa: E402
from scaling.train.speed import device_peak, measure_cpu_peak  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="bf16 + torch.compile on the GPU")
    ap.add_argument("--sizes", default=None, help="comma list (default: 5M,10M,20M on CPU; 50M,300M,1B on GPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per size (default 25 CPU, 60 GPU)")
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--data", default=None, help="token shards dir (default: the embedded corpus)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    gpu = args.gpu
    sizes = (args.sizes or ("50M,300M,1B" if gpu else "5M,10M,20M")).split(",")
    steps = args.steps or (60 if gpu else 25)
    seq_len = args.seq_len or (1024 if gpu else 128)
    batch = args.batch_size or (32 if gpu else 16)
    if gpu:
        peak, name = device_peak("cuda", "bf16-mixed")
        print(f"device: {name}; dense bf16 peak used for MFU: {peak / 1e12:.0f} TFLOP/s")
    else:
        peak = measure_cpu_peak(seconds=2.0)
        name = f"{torch.get_num_threads()} CPU threads"
        print(f"device: {name}; measured fp32 matmul peak (1024^3): {peak / 1e9:.0f} GFLOP/s")

    try:
        import polars  # noqa: F401
    except ImportError:  # a bare GPU box: the numbers come from memory, skip metrics.parquet
        TrainingRun._write_metrics = lambda self, rows: None

    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(
                params=size, tokens=steps * batch * seq_len, out=os.path.join(tmp, "run"), data=args.data,
                seq_len=seq_len, batch_size=batch, val_points=2, val_examples=16, log_every=5,
                checkpoint_every_s=1e9, progress=False, compile=gpu and not args.no_compile,
                device="cuda" if gpu else "cpu", warmup_frac=0.1,
            )
            run = TrainingRun(cfg)
            t0 = time.perf_counter()
            try:
                rec = run.fit()
            except Exception as e:  # e.g. out of memory at the largest size: report, go on
                print(f"{size:>6}  failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                if gpu:
                    torch.cuda.empty_cache()
                continue
            wall = time.perf_counter() - t0
            rows = [r for r in run.recorder.rows if r["split"] == "train"][2:]
            tps = statistics.median(r["tokens_per_s"] for r in rows)
            mfu = statistics.median(r["mfu"] for r in rows)
            step_s = cfg.batch_size * cfg.seq_len / tps
            # the batch-building cost of this shape, on this host
            from scaling.data.shards import TokenShards

            shards = TokenShards.open(rec["data"], "train")
            obj = MixedObjective(shards.tokens, shards.doc_starts, ObjectiveConfig(seq_len=seq_len), 0)
            obj.batch(np.arange(batch))
            t = time.perf_counter()
            for i in range(10):
                obj.batch(np.arange(i * batch, (i + 1) * batch))
            data_s = (time.perf_counter() - t) / 10
            res = {
                "size": size, "n_params": rec["n_params"], "shape": rec["model_shape"], "seq_len": seq_len,
                "batch": batch, "tokens_per_s": tps, "mfu": mfu, "step_s": step_s, "batch_build_s": data_s,
                "batch_share": data_s / step_s, "wall_s": wall, "device": rec["device"],
            }
            results.append(res)
            print(
                f"{size:>6}  N={rec['n_params']:>13,}  {tps:>10,.0f} tok/s  MFU {mfu:6.1%}  "
                f"step {step_s * 1e3:7.1f} ms  batch build {data_s * 1e3:5.2f} ms ({data_s / step_s:.1%} of a step)  "
                f"[{rec['model_shape'].split(':')[0]}]",
                flush=True,
            )
    print("\n| size | params | shape | tokens/s | MFU | batch build / step |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['size']} | {r['n_params']:,} | {r['shape'].split(':')[0]} | {r['tokens_per_s']:,.0f} | "
              f"{r['mfu']:.1%} | {r['batch_share']:.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "peak": peak, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
