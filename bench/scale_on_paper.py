"""What a GPU sweep costs before it runs: H100-hours per run and per sweep at the MFU the
lab measured on an H100, how many GPUs each run needs to finish inside a day, and the memory
per GPU as `sweep plan` plans it. Prints a markdown table per sweep file; asserts nothing.

    .venv/bin/python bench/scale_on_paper.py [sweeps/isoflop-gpu.toml sweeps/isoflop-20b.toml]

MFU by size: log-linear in N between the H100 measurements in the README (bench_train.py
--gpu, batch 64 x 1024: 29.6% at 48M, 40.4% at 296M, 43.8% at 951M), held flat outside them.
Memory per GPU: `sweep plan`'s memory plan (scaling/base/memory.py, scaling/sweep/placement.py):
fp32 weights, gradients and AdamW's two moments, DDP's buckets or FSDP's gathered blocks,
autocast's bf16 weight copies, and one micro-batch's activations counted tensor by tensor
(Korthikanti et al. 2022 adapted to the encoder-decoder, checked against torch on CPU); each
run under DDP where it fits its GPU at a micro-batch of 4 or more, else FSDP where that fits a
larger one, at the largest micro-batch that fits.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict

from scaling.base.config import format_count
from scaling.sweep.spec import format_budget, load_sweep

MEASURED_MFU = [(48.3e6, 0.296), (296e6, 0.404), (951e6, 0.438)]  # README, one H100, batch 64 x 1024
H100_PEAK = 989e12
DAY_H = 24.0


def mfu(n: float) -> float:
    pts = MEASURED_MFU
    if n <= pts[0][0]:
        return pts[0][1]
    if n >= pts[-1][0]:
        return pts[-1][1]
    for (n0, m0), (n1, m1) in zip(pts, pts[1:]):
        if n <= n1:
            t = math.log(n / n0) / math.log(n1 / n0)
            return m0 + t * (m1 - m0)
    return pts[-1][1]


def table(path: str) -> str:
    sweep = load_sweep(path)
    by_budget = defaultdict(list)
    for r in sweep.runs:
        by_budget[r.budget or r.flops].append(r)
    lines = [f"**{path}** ({len(sweep.runs)} runs, {sweep.resources.world} GPU(s) per run as written)", "",
             "| budget | sizes | H100-hours per run | GPUs to finish in 24 h | GB per GPU, largest as planned | the plan's pick |",
             "|---|---|---|---|---|---|"]
    total_h = 0.0
    for budget, runs in sorted(by_budget.items()):
        hours, gpus, mems, fsdp, micro_fit = [], [], [], [], []
        written = sweep.runs[0].config   # as the file wrote it, before the plan lowered anything
        for r in runs:
            world = max(1, r.config.devices * r.config.num_nodes)
            share = r.config.batch_size // world
            h = r.flops / (H100_PEAK * mfu(r.n_params)) / 3600
            total_h += h
            hours.append(h)
            g = max(1, math.ceil(h / DAY_H))
            gpus.append(g if g <= 8 else 8 * math.ceil(g / 8))   # past one node: whole nodes
            m = r.placement.choice.memory if r.placement else None
            mems.append(m.total / 1e9 if m else 0.0)
            if m and m.strategy == "fsdp":
                fsdp.append((r.n_params, m.micro_batch))
            elif m and m.micro_batch < (written.micro_batch or share):
                micro_fit.append(m.micro_batch)   # accumulation: the same run, smaller pieces
        needs = []
        if max(gpus) > 8:
            needs.append(f"{max(gpus) // 8} nodes of 8")
        elif max(gpus) > 1:
            needs.append(f"DDP on {max(gpus)} GPUs")
        if micro_fit:
            lo, hi = min(micro_fit), max(micro_fit)
            needs.append(f"DDP, micro_batch {lo}{f'-{hi}' if hi > lo else ''} for {len(micro_fit)} run(s)")
        if fsdp:
            n = min(n for n, _ in fsdp)
            micros = sorted({k for _, k in fsdp})
            needs.append(f"FSDP from {format_count(n)} up ({len(fsdp)} run(s), micro_batch {micros[0]}"
                         f"{f'-{micros[-1]}' if len(micros) > 1 else ''})")
        sizes = f"{format_count(min(r.n_params for r in runs))}-{format_count(max(r.n_params for r in runs))}"
        lines.append(f"| {format_budget(budget)} | {sizes} | {min(hours):.3g}-{max(hours):.3g} | "
                     f"{max(gpus)} | {max(mems):.0f} | {'; '.join(needs) or 'as written'} |")
    lines += ["", f"Whole sweep: {total_h:,.0f} H100-hours ({total_h / 24:,.1f} GPU-days) at the measured MFU."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweeps", nargs="*", default=["sweeps/isoflop-gpu.toml", "sweeps/isoflop-20b.toml"])
    args = p.parse_args(argv)
    for path in args.sweeps:
        print(table(path))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
