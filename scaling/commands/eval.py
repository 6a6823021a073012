"""`scaling eval RUN_OR_SWEEP --tasks TASK ...`: kept models scored on downstream tasks after
the fact, with the columns a run writes at its validation points (task.<name>.bpb, ...:
docs/tasks.md), recorded in each run's run.json ("tasks") and, for a sweep already
collected, in its results.parquet (collected again)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import RUN_JSON, WEIGHTS, read_run_json
from scaling.data.tasks import checked_eval_list
from scaling.jobs.ledger import load_ledger
from scaling.sweep.collect import RESULTS, collect
from scaling.sweep.status import run_dirs
from scaling.use.evaluate import evaluate, record_tasks
from scaling.use.load import describe, load_run


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="score kept models on downstream tasks (bpb of the answer, multiple-choice accuracy)",
        description="Score the model a completed run kept (or every completed run of a sweep) on tasks: built-in "
                    "docsum and nextsent (drawn from the run's validation split) or .jsonl task files "
                    "(docs/tasks.md). The columns task.<name>.bpb, .bpb_clm, .acc, .acc_clm go into each "
                    "run's run.json, and a collected sweep's results.parquet is collected again.")
    p.add_argument("target", type=Path, help="a run directory, or a sweep directory (every completed run)")
    p.add_argument("--tasks", "--eval", dest="tasks", nargs="+", required=True, metavar="TASK",
                   help="docsum, nextsent or FILE.jsonl (several, or comma-separated; --eval as in scaling train)")
    p.add_argument("--data", default=None, help="shard directory the built-in tasks are drawn from (default: the run's)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.set_defaults(func=run)


def _runs(target: Path) -> list[tuple[str, Path]]:
    """(name, directory) of the completed runs of `target` (a run or a sweep)."""
    if not target.is_dir():
        raise UserError(f"{target}: no such run or sweep directory")
    if (target / RUN_JSON).exists():
        return [(target.name, target)]
    dirs = run_dirs(target, load_ledger(target))
    if not dirs:
        raise UserError(f"{target}: neither a run directory (no {RUN_JSON}) nor a sweep with runs")
    done = [(n, d) for n, d in sorted(dirs.items()) if (read_run_json(d) or {}).get("status") == "completed"]
    if not done:
        raise UserError(f"{target}: no completed run to evaluate")
    # Runs of a sweep that kept no model (keep_weights = false, or its files deleted) are
    # named and left out; the others are scored. A single run without one is an error.
    kept = [(n, d) for n, d in done if (Path(d) / WEIGHTS).exists()]
    if not kept:
        raise UserError(f"{target}: none of its {len(done)} completed runs kept its model ({WEIGHTS}; "
                        "keep_weights = false?): nothing to evaluate")
    if len(kept) < len(done):
        left = [n for n, d in done if (n, d) not in kept]
        print(f"note: {len(left)} completed run(s) kept no model and are not scored: {', '.join(left)}",
              file=sys.stderr)
    done = kept
    return done


def run(args: argparse.Namespace) -> int:
    names = checked_eval_list([n.strip() for a in args.tasks for n in a.split(",") if n.strip()], "--tasks",
                              os.path.abspath)
    runs = _runs(args.target)
    scores = {}
    for name, d in runs:   # every run scored before any run.json is written
        kept = load_run(d, args.device)
        print(describe(kept), file=sys.stderr)
        scores[name] = (d, evaluate(kept, names, args.data))
    for d, s in scores.values():
        record_tasks(d, s)
    cols = sorted({c for _, s in scores.values() for c in s})
    width = max(len(n) for n in scores)
    print("run".ljust(width) + "".join(f"  {c:>24}" for c in cols))
    for name, (_, s) in scores.items():
        print(name.ljust(width) + "".join(f"  {s.get(c, math.nan):>24.4f}" for c in cols))
    if (args.target / RESULTS).exists():
        collect(args.target)
        print(f"{args.target / RESULTS}: collected again with the tasks' columns", file=sys.stderr)
    return 0
