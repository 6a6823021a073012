"""Trials per hour of `scaling tune` on this machine, with and without pruning.

    .venv/bin/python bench/bench_tune.py [--sizes 15K,400K] [--trials 6] [--tokens 256K] [--json FILE]

The demo's setting (sweeps/demo-cpu.toml): its smallest and largest sizes, byte-level
tokens, seq_len 64, one torch thread per trial and two trials at a time on two cores (local
executor, `--jobs 2`). Each study is a real `scaling tune` command: every trial a submitit
job that starts Python, asks the study, trains and validates. Run once with `--pruner none`
and once with `--pruner median` (same seed, fresh directories); reports the wall time, trials
finished (completed + pruned) per hour, the tokens the trials trained against their full
budgets (what pruning saves), and the best loss per size (what pruning must not lose).
Prints figures; asserts nothing. The load average is printed before and after: on a
shared machine, say so with the figures.

Needs the byte shards: scaling prepare --corpus default --tokenizer bytes --out data/shards/default-bytes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.cli import main as cli  # noqa: E402


def study(out: Path, sizes: list[str], pruner: str, args) -> dict:
    import optuna

    from scaling.tuning.study import storage

    argv = ["tune", "--sizes", ",".join(sizes), "--tokens", args.tokens, "--seq-len", "64",
            "--batch-size", str(args.batch_size), "--val-points", str(args.val_points), "--trials", str(args.trials),
            "--jobs", "2", "--executor", "local", "--pruner", pruner, "--corpus", args.data, "--out", str(out)]
    t = time.time()
    rc = cli(argv)
    wall = time.time() - t
    row = {"pruner": pruner, "rc": rc, "wall_s": wall, "sizes": {}}
    done = 0
    for size in sizes:
        trials = optuna.load_study(study_name=f"lr-{size}", storage=storage(out)).get_trials()
        states = [t.state.name for t in trials]
        seen = budget = 0
        for t in trials:
            rec = json.loads((out / size / "trials" / str(t.number) / "run.json").read_text())
            seen += rec["tokens_seen"]
            budget += rec["tokens_budget"]
        best = min((t.value for t in trials if t.state.name == "COMPLETE"), default=None)
        row["sizes"][size] = {"completed": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
                              "failed": states.count("FAIL"), "tokens_seen": seen, "tokens_budget": budget,
                              "best_loss": best}
        done += states.count("COMPLETE") + states.count("PRUNED")
    row["trials"] = done
    row["trials_per_hour"] = done / wall * 3600
    row["token_share"] = (sum(s["tokens_seen"] for s in row["sizes"].values())
                          / sum(s["tokens_budget"] for s in row["sizes"].values()))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="15K,400K", help="model sizes (default: the demo's smallest and largest)")
    ap.add_argument("--trials", type=int, default=6, help="trials per size (default 6; the median pruner "
                    "starts judging after 3)")
    ap.add_argument("--tokens", default="256K", help="token budget of every trial (default 256K: 250 steps of 16 x 64)")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16, the demo's)")
    ap.add_argument("--val-points", type=int, default=5, help="validation points per trial (default 5, the demo's)")
    ap.add_argument("--data", default="data/shards/default-bytes", help="byte-level token shards")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if not Path(args.data, "meta.json").exists():
        print(f"error: {args.data}: no token shards; run `scaling prepare --corpus default --tokenizer bytes "
              f"--out {args.data}` first", file=sys.stderr)
        return 2
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    load0 = os.getloadavg()
    print(f"{os.cpu_count()} CPUs; load average {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} (1 / 5 / 15 min); "
          f"sizes {', '.join(sizes)}, {args.trials} trials each, {args.tokens} tokens of {args.batch_size} x 64, "
          f"2 trials at a time, 1 thread each", flush=True)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    try:
        for pruner in ("none", "median"):
            r = study(tmp / pruner, sizes, pruner, args)
            rows.append(r)
            per = "; ".join(f"{k}: {v['completed']} done, {v['pruned']} pruned, best {v['best_loss']:.4f}"
                            for k, v in r["sizes"].items())
            print(f"pruner {pruner:6}  {r['wall_s']:6.0f} s  {r['trials']} trials  {r['trials_per_hour']:5.0f} trials/h  "
                  f"tokens trained {r['token_share']:.0%} of the budgets  ({per})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f}")
    if len(rows) == 2:
        print(f"median pruning: {rows[1]['trials_per_hour'] / rows[0]['trials_per_hour']:.2f}x the trials per hour")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load_before": load0, "load_after": load1,
                                               "args": {k: v for k, v in vars(args).items() if k != "json"}},
                                              indent=1))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
