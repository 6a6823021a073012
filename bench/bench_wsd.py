"""WSD against cosine at equal tokens, on the demo's sizes: final validation loss, several seeds.

    python bench/bench_wsd.py [--runs C8e11-N60.5K,C8e11-N151K] [--seeds 0,1,2] [--data DIR] [--json FILE]

Each row trains one run of sweeps/demo-cpu.toml (its size, tokens, batch, lr, seq_len and
validation, as the demo trains it) twice through TrainingRun on ONE thread: once with the
sweep's cosine schedule and once with WSD (warmup, constant, a 20% 1-sqrt cooldown to the same
10% of peak), same seed, same data order. The difference is WSD's final mixed validation loss
minus cosine's (negative: WSD is better). The figures are in docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"   # as the demo's runs (cpus_per_task = 1); before torch loads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.sweep.spec import load_sweep  # noqa: E402
from scaling.train.run import TrainingRun  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def final_loss(cfg) -> tuple[float, float]:
    t = time.monotonic()
    rec = TrainingRun(cfg).fit()
    assert rec["status"] == "completed", rec.get("error")
    return rec["val"]["mixed"]["loss"], time.monotonic() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", default=str(ROOT / "sweeps" / "demo-cpu.toml"))
    p.add_argument("--runs", default="C8e11-N60.5K,C8e11-N151K", help="the sweep's runs to compare")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data", default=str(ROOT / "data" / "shards" / "default-bytes"))
    p.add_argument("--cooldown-frac", type=float, default=0.2)
    p.add_argument("--cooldown-shape", default="1-sqrt")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    sweep = load_sweep(args.sweep)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-wsd-") as tmp:
        for name in args.runs.split(","):
            spec = sweep.run(name)
            for seed in (int(s) for s in args.seeds.split(",")):
                common = dict(data=os.path.abspath(args.data), seed=seed, progress=False, keep_weights=False)
                cos = dataclasses.replace(spec.config, out=f"{tmp}/{name}-{seed}-cos", **common)
                wsd = dataclasses.replace(cos, out=f"{tmp}/{name}-{seed}-wsd", schedule="wsd",
                                          cooldown_frac=args.cooldown_frac, cooldown_shape=args.cooldown_shape)
                (lc, tc), (lw, tw) = final_loss(cos), final_loss(wsd)
                row = {"run": name, "n_params_nonembed": spec.n_params_nonembed, "tokens": spec.tokens,
                       "batch": cos.batch_size, "seed": seed, "cosine": lc, "wsd": lw, "diff": lw - lc,
                       "wall_s": tc + tw}
                rows.append(row)
                print(f"{name:16s} N_ne={spec.n_params_nonembed:>7,} D={spec.tokens:>9,} seed {seed}: cosine {lc:.4f} "
                      f"wsd {lw:.4f} diff {lw - lc:+.4f} ({tc:.0f}+{tw:.0f} s)", flush=True)
    for name in args.runs.split(","):
        d = [r["diff"] for r in rows if r["run"] == name]
        sd = statistics.stdev(d) if len(d) > 1 else float("nan")
        print(f"{name}: mean diff {statistics.mean(d):+.4f} nats (sd {sd:.4f}, {len(d)} seeds)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
