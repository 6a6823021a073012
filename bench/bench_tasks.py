"""The cost of downstream tasks in a run: the share of a run's wall time spent scoring its
tasks (docsum and nextsent, at every validation point), at the demo's settings.

    python bench/bench_tasks.py                       # the demo's smallest and largest budget, middle size
    python bench/bench_tasks.py --runs C1e11-N33.4K   # runs of sweeps/demo-cpu.toml by name

Each run trains as the demo trains it (its config from sweeps/demo-cpu.toml, one thread)
with `eval = ["docsum", "nextsent"]`, in a temporary directory; the tasks' time is the
`task_s` column of its validation rows, the run's time run.json's wall_time_s. Wall time:
run it on a quiet machine (the load average is printed with the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402
import torch  # noqa: E402

from scaling.sweep.spec import load_sweep  # noqa: E402
from scaling.train.run import TrainingRun  # noqa: E402

TASKS = ["docsum", "nextsent"]


def measure(cfg, out: Path) -> dict:
    cfg = cfg.updated(out=str(out), eval=TASKS, progress=False, keep_weights=False)
    rec = TrainingRun(cfg).fit()
    val = pl.read_parquet(out / "metrics.parquet").filter(pl.col("split") == "val")
    task_s, wall = float(val["task_s"].sum()), float(rec["wall_time_s"])
    return {"run": out.name, "steps": rec["steps"], "points": val.height, "wall_s": wall, "task_s": task_s,
            "share": task_s / wall, **{k: v for k, v in (rec.get("tasks") or {}).items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=str(ROOT / "sweeps" / "demo-cpu.toml"))
    ap.add_argument("--runs", nargs="*", default=None, help="run names (default: the smallest and largest budget's middle size)")
    ap.add_argument("--data", default=None, help="shard directory (default: the sweep's)")
    ap.add_argument("--steps", type=int, default=None, help="train this many steps instead (a quick check)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sweep = load_sweep(args.sweep)
    runs = {r.name: r for r in sweep.runs}
    if args.runs:
        names = args.runs
    else:   # runs are listed budget by budget, sizes ascending
        budgets = sorted({r.config.extra.get("budget") for r in sweep.runs})
        names = []
        for b in (budgets[0], budgets[-1]):
            of = [r.name for r in sweep.runs if r.config.extra.get("budget") == b]
            names.append(of[len(of) // 2])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as tmp:
        for name in names:
            cfg = runs[name].config
            if args.data:
                cfg = cfg.updated(data=args.data)
            if args.steps:
                cfg = cfg.updated(tokens=args.steps * cfg.tokens_per_step)
            rows.append(measure(cfg, Path(tmp) / name))
            r = rows[-1]
            print(f"| {name} | {r['steps']} steps | {r['points']} points | run {r['wall_s']:.1f} s | "
                  f"tasks {r['task_s']:.2f} s | share {100 * r['share']:.1f}% |", flush=True)
    total = sum(r["task_s"] for r in rows) / sum(r["wall_s"] for r in rows)
    load = os.getloadavg()
    print(f"tasks' share of these runs' wall time: {100 * total:.1f}% (target: at most 10%); "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": rows, "share": total, "load": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
