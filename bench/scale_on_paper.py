"""What a GPU sweep costs before it runs: H100-hours per run and per sweep at the MFU the
lab measured on an H100, how many GPUs each run needs to finish inside a day, and whether its
training state fits an 80 GB GPU. Prints a markdown table per sweep file; asserts nothing.

    .venv/bin/python bench/scale_on_paper.py [sweeps/isoflop-gpu.toml sweeps/isoflop-20b.toml]

MFU by size: log-linear in N between the H100 measurements in the README (bench_train.py
--gpu, batch 64 x 1024: 29.6% at 48M, 40.4% at 296M, 43.8% at 951M), held flat outside them.
Memory per GPU under DDP with bf16 autocast and fused AdamW: 16 bytes per parameter of
replicated state (fp32 weights, gradients, Adam's two moments) plus activations of one
micro-batch (~34 bytes x d_model per token per encoder layer, ~51 per decoder layer with its
cross-attention, flash attention, no recomputation) plus the fp32 logits: the rule of thumb
of Korthikanti et al. (2022), an upper bound rather than a measurement (the 951M model's
32 x 1024 micro-batch, estimated at 81 GB, trained on an 80 GB H100).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict

from scaling.base.config import format_count
from scaling.sweep.sizes import model_for
from scaling.sweep.spec import format_budget, load_sweep

MEASURED_MFU = [(48.3e6, 0.296), (296e6, 0.404), (951e6, 0.438)]  # README, one H100, batch 64 x 1024
H100_PEAK = 989e12
H100_GB = 80
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


def memory_gb(run, micro: int, vocab: int | None) -> tuple[float, float]:
    """(replicated training state, state + activations of one micro-batch) in GB per GPU."""
    cfg = run.config
    m = model_for(cfg.params, cfg.tied_embeddings, cfg.seq_len, cfg.data, vocab)
    state = 16.0 * m.n_params()
    tokens = micro * cfg.seq_len
    act = tokens * m.d_model * (34 * m.n_enc_layers + 51 * m.n_dec_layers) + tokens * m.vocab_size * 6
    return state / 1e9, (state + act) / 1e9


def table(path: str) -> str:
    sweep = load_sweep(path)
    by_budget = defaultdict(list)
    for r in sweep.runs:
        by_budget[r.budget or r.flops].append(r)
    lines = [f"**{path}** ({len(sweep.runs)} runs, {sweep.resources.world} GPU(s) per run as written)", "",
             "| budget | sizes | H100-hours per run | GPUs to finish in 24 h | GB per GPU, largest run as written | needs |",
             "|---|---|---|---|---|---|"]
    total_h = 0.0
    for budget, runs in sorted(by_budget.items()):
        hours, gpus, mems, fsdp, micro_fit = [], [], [], [], []
        for r in runs:
            world = max(1, r.config.devices * r.config.num_nodes)
            share = r.config.batch_size // world
            micro = r.config.micro_batch or share
            h = r.flops / (H100_PEAK * mfu(r.n_params)) / 3600
            total_h += h
            hours.append(h)
            g = max(1, math.ceil(h / DAY_H))
            gpus.append(g if g <= 8 else 8 * math.ceil(g / 8))   # past one node: whole nodes
            state, mem = memory_gb(r, micro, sweep.vocab_size)
            mems.append(mem)
            if state > H100_GB:
                fsdp.append((r.n_params, state))
            elif mem > H100_GB:
                # The largest micro-batch dividing the share that fits: accumulation, same run.
                fits = [k for k in range(micro, 0, -1) if share % k == 0 and memory_gb(r, k, sweep.vocab_size)[1] <= H100_GB]
                if fits:
                    micro_fit.append(fits[0])
                else:
                    fsdp.append((r.n_params, state))   # even one sequence leaves no room
        needs = []
        if max(gpus) > 8:
            needs.append(f"{max(gpus) // 8} nodes of 8")
        elif max(gpus) > 1:
            needs.append(f"DDP on {max(gpus)} GPUs")
        if micro_fit:
            needs.append(f"micro_batch <= {min(micro_fit)} for {len(micro_fit)} run(s)")
        if fsdp:
            n, st = min(fsdp)
            needs.append(f"FSDP from {format_count(n)} up ({len(fsdp)} run(s); state alone {st:.0f} GB)")
        sizes = f"{format_count(min(r.n_params for r in runs))}-{format_count(max(r.n_params for r in runs))}"
        lines.append(f"| {format_budget(budget)} | {sizes} | {min(hours):.3g}-{max(hours):.3g} | "
                     f"{max(gpus)} | {max(mems):.0f} | {'; '.join(needs) or 'one GPU'} |")
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
