"""Compute per law: one grid of (N, D) points trained as a branched WSD sweep (one trunk per
size, a cooldown branched off it for every shorter D) and from scratch (every point its own WSD
run). Prints what each arm trained (FLOPs, wall time), each point's loss in both arms, and the
law each arm's points fit; asserts nothing.

    .venv/bin/python bench/bench_branches.py [--sizes 20K,40K,80K] [--tokens-per-param 2.5,5,10,20]
        [--cooldown-frac 0.2] [--data DIR] [--out DIR] [--json FILE]

Both arms are the same sweep file but for `[sweep] branches`, launched on local processes two
at a time with one thread each (as the demo's runs), then collected and fitted (approach 3,
N = non-embedding parameters). A branch is the from-scratch run of its length to float tolerance
(tests/test_wsd.py) when both warm up alike; here the from-scratch arm is the sweep a user
would write without branches (each run warms up over its own `warmup_frac`), so the two arms'
points differ by the warmup and the laws by what that moves. The figures are in
docs/benchmarks.md ("Branching sweeps: compute per law").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SWEEP = """
[sweep]
name = "{name}"
kind = "grid"
vocab_size = 260
branches = {branches}

[grid]
sizes = {sizes}
tokens_per_param = {tpp}

[train]
data = "{data}"
seq_len = 32
batch_size = 16
lr = 1.5e-3
schedule = "wsd"
cooldown_frac = {cooldown}
val_points = 3
val_examples = 512
keep_weights = false
progress = false

[executor]
default = "local"
cpus_per_task = 1
parallelism = 2
time_min = 30
"""


def arm(name: str, branches: bool, args, work: Path) -> dict:
    import polars as pl

    import scaling
    from scaling.sweep.branches import branched_compute
    from scaling.sweep.collect import collect
    from scaling.sweep.launch import launch, wait_for
    from scaling.sweep.spec import load_sweep

    f = work / f"{name}.toml"
    f.write_text(SWEEP.format(name=name, branches=str(branches).lower(), data=args.data, cooldown=args.cooldown_frac,
                              sizes=json.dumps(args.sizes.split(",")),
                              tpp="[" + ", ".join(args.tokens_per_param.split(",")) + "]"))
    spec = load_sweep(f)
    paper = branched_compute(spec.runs)
    trained = paper.branched if branches else paper.scratch
    out = work / name
    t0 = time.monotonic()
    launch(spec, "local", out, progress=False)
    states = wait_for(out, progress=False, poll_s=1)
    wall = time.monotonic() - t0
    bad = [s.name for s in states if s.state != "completed"]
    if bad:
        raise SystemExit(f"{name}: runs not completed: {', '.join(bad)} (logs: scaling sweep logs {out} RUN --err)")
    results, _, _ = collect(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = scaling.fit(results, columns={"params": "params_nonembed"}, approaches=[3], n_boot=200, progress=False)
    p = {r["name"]: r["value"] for r in fit.params.filter(pl.col("approach") == 3).iter_rows(named=True)}
    c_top = float(results["flops"].max()) * 10
    opt = fit.optimal(c_top).row(0, named=True)
    loss = {r["run"]: r["loss"] for r in results.select("run", "loss").iter_rows(named=True)}
    return {"arm": name, "runs": len(states), "trunks": paper.trunks if branches else len(states),
            "flops_trained": trained, "flops_points": paper.scratch, "wall_s": wall, "law": p,
            "C_10x": c_top, "opt_10x": {"N": opt["params"], "D": opt["tokens"], "loss": opt["loss"],
                                        "loss_lower": opt["loss_lower"], "loss_upper": opt["loss_upper"]},
            "loss": loss}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20K,40K,80K")
    ap.add_argument("--tokens-per-param", default="2.5,5,10,20")
    ap.add_argument("--cooldown-frac", type=float, default=0.2)
    ap.add_argument("--data", default=str(ROOT / "data" / "shards" / "default-bytes"))
    ap.add_argument("--out", default=None, help="keep both sweeps here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    args.data = os.path.abspath(args.data)
    n_sizes, n_d = len(args.sizes.split(",")), len(args.tokens_per_param.split(","))
    if n_sizes < 3 or n_sizes * n_d < 8:
        # approach 3's own minimum, checked before anything trains rather than after
        raise SystemExit(f"--sizes / --tokens-per-param: {n_sizes} size(s) x {n_d} D give {n_sizes * n_d} points; "
                         "the law needs at least 3 sizes and 8 points")
    if not (Path(args.data) / "meta.json").exists():
        print(f"preparing {args.data} (the embedded corpus as bytes) ...", flush=True)
        subprocess.run([sys.executable, "-m", "scaling.cli", "prepare", "--corpus", "default", "--tokenizer", "bytes",
                        "--out", args.data], check=True)
    print(f"{platform.node()}: {os.cpu_count()} cores; sizes {args.sizes}, tokens/param {args.tokens_per_param}, "
          f"{args.cooldown_frac:.0%} cooldown", flush=True)
    # Both sweeps in --out, or in a temporary folder removed however the arms end.
    keep = contextlib.nullcontext(args.out) if args.out else tempfile.TemporaryDirectory(prefix="bench-branches-")
    with keep as folder:
        work = Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        arms = [arm("branched", True, args, work), arm("scratch", False, args, work)]
    b, s = arms
    print(f"\n{'arm':10s} {'runs':>4s} {'trunks':>6s} {'FLOPs trained':>14s} {'wall':>7s}")
    for a in arms:
        print(f"{a['arm']:10s} {a['runs']:4d} {a['trunks']:6d} {a['flops_trained']:14.3g} {a['wall_s']:6.0f}s")
    print(f"branched / scratch: FLOPs {b['flops_trained'] / s['flops_trained']:.2f}, wall {b['wall_s'] / s['wall_s']:.2f}")
    print(f"\n{'point':16s} {'branched':>9s} {'scratch':>9s} {'diff':>8s}")
    diffs = []
    for run in sorted(s["loss"]):
        d = b["loss"][run] - s["loss"][run]
        diffs.append(abs(d))
        print(f"{run:16s} {b['loss'][run]:9.4f} {s['loss'][run]:9.4f} {d:+8.4f}")
    print(f"largest |diff|: {max(diffs):.2e} nats (the branched sweep warms every run of a size up over its shortest "
          "run's warmup, the from-scratch runs over their own warmup_frac: the shortest run of each size is the same run "
          "in both arms, the others differ by their warmup alone)")
    print(f"\n{'law':10s} " + " ".join(f"{k:>8s}" for k in ("E", "A", "alpha", "B", "beta", "a")) +
          f"   at {s['C_10x']:.3g} FLOPs (10x the largest point): N_opt, loss")
    for a in arms:
        p, o = a["law"], a["opt_10x"]
        print(f"{a['arm']:10s} " + " ".join(f"{p.get(k, float('nan')):8.4g}" for k in ("E", "A", "alpha", "B", "beta", "a"))
              + f"   {o['N']:.3g}, {o['loss']:.4f} " + (f"[{o['loss_lower']:.4f}, {o['loss_upper']:.4f}]"
                                                     if o["loss_lower"] is not None else "(no bootstrap interval)"))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.node(), "cores": os.cpu_count(), "args": vars(args),
                                               "arms": arms}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
