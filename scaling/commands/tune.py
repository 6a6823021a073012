"""`scaling tune`: per-size peak learning rate by Optuna search (one study per model size)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="per-size learning-rate search with Optuna",
        description="Search the peak learning rate of one model size at one token budget with Optuna (TPE over "
        "a log-uniform range). Each trial is a real `scaling train` run in OUT/trials/<n>/; the objective is the "
        "final mixed validation loss. The study lives in OUT/study.journal: rerunning resumes it and only runs "
        "the trials still missing up to --trials. Writes OUT/best.json.",
    )
    p.add_argument("--params", required=True, help="model size target: 2M, 350M, ... or an integer")
    p.add_argument("--tokens", required=True, help="token budget D of every trial: 2M, 20M, ...")
    p.add_argument("--out", required=True, help="study directory, e.g. tune/2M")
    p.add_argument("--trials", type=int, default=8, help="total trials in the study (default 8)")
    p.add_argument("--lr-min", type=float, default=1e-4, help="lower end of the log-uniform lr range (default 1e-4)")
    p.add_argument("--lr-max", type=float, default=3e-2, help="upper end of the log-uniform lr range (default 3e-2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's run")
    p.add_argument("--corpus", "--data", dest="data", default=None,
                   help="token shards dir or raw corpus, as for `scaling train` (default: the embedded corpus)")
    p.add_argument("--seq-len", type=int, default=None, help="source window in tokens (default 128)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 16)")
    p.add_argument("--val-points", type=int, default=None, help="log-spaced validation points per run (default 8)")
    p.add_argument("--jobs", type=int, default=1, help="trials trained in parallel as local processes (default 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-progress", action="store_true", help="no per-run progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from scaling.config import parse_count
    from scaling.tune import TuneConfig, Tuner, format_table

    cfg = TuneConfig(
        params=args.params, tokens=parse_count(args.tokens, "--tokens"), out=args.out, trials=args.trials,
        lr_min=args.lr_min, lr_max=args.lr_max, seed=args.seed, jobs=args.jobs, data=args.data,
        seq_len=args.seq_len, batch_size=args.batch_size, val_points=args.val_points, device=args.device,
        progress=not args.no_progress,
    )
    tuner = Tuner(cfg)
    best = tuner.run()
    print(format_table(tuner.table, best["trial"] if best else None))
    if tuner.stopped:
        print(f"a trial stopped before its budget: rerun the same command to resume {args.out}")
        if best is None:
            return 1
    if best is None:
        print(f"no completed trial in {args.out}: no best learning rate")
        return 1
    rule = f"rule of N: lr {best['lr_rule']:.3g}"
    if best["lr_rule_loss"] is not None:
        rule += f", loss {best['lr_rule_loss']:.4f}"
    edge = "  (at the edge of the range: widen --lr-min/--lr-max)" if best["at_range_edge"] else ""
    print(f"best lr {best['lr']:.4g} (trial {best['trial']}, val loss {best['loss']:.4f}); {rule}{edge}")
    print(f"wrote {args.out}/best.json: {json.dumps({k: best[k] for k in ('params', 'lr', 'loss', 'n_trials')})}")
    return 1 if tuner.stopped else 0
