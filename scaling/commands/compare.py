"""`scaling compare SWEEP_A SWEEP_B ...`: recipes compared by the compute each needs to reach the
first one's compute-optimal loss on one yardstick, with bootstrap intervals (scaling.compare)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import atomic_write_bytes, atomic_write_json
from scaling.figures import comparison
from scaling.figures.page import PAGE, check_out, page, write_figures
from scaling.fit.compare import DEFAULT_METRIC, N_BOOT, compare
from scaling.report import comparison_section


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="recipes compared: the compute one needs to match another's loss, with intervals",
        description="Fit each sweep's law L(N, D) on one yardstick column and report, across the runs' compute and "
                    "at a plan's, the compute multiplier k(C) each recipe needs to reach the first one's "
                    "compute-optimal loss (95% bootstrap interval; 'no difference' when it holds 1), and the ratios "
                    "of compute-optimal N and D.")
    p.add_argument("sources", nargs="+", metavar="SWEEP_OR_TABLE",
                   help="sweep directories (their results.parquet) or results tables; the first is the reference")
    p.add_argument("--metric", default=DEFAULT_METRIC,
                   help=f"the yardstick column every run was scored on (default {DEFAULT_METRIC}: causal-LM bits per "
                        "byte on the same held-out text; bpb, bpb_denoise, task.NAME.bpb, loss_clm in nats ...)")
    p.add_argument("--plan-compute", default=None, metavar="FLOPS",
                   help="also extrapolate to this training compute, e.g. 1e21")
    p.add_argument("--columns", default=None, metavar="NAME=COL,...",
                   help="map the other columns, as `scaling fit --columns` (e.g. params=params_nonembed)")
    p.add_argument("--names", default=None, metavar="A,B,...", help="the recipes' names (default: each sweep's name)")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, metavar="N",
                   help=f"bootstrap resamples of each sweep's runs (default {N_BOOT}, at least 20)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the record as one JSON object instead of the text")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the record as JSON to FILE")
    p.add_argument("--plots", default=None, metavar="DIR", help="write DIR/compare.html with the figure")
    p.add_argument("--report", default=None, metavar="FILE", help="write an HTML page with the comparison's section")
    p.set_defaults(func=run)


def _compute(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise UserError(f"--plan-compute: {text!r} is not a number of FLOPs (e.g. 1e21)") from None
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"--plan-compute: {text}: expected positive FLOPs (e.g. 1e21)")
    return v


def run(args: argparse.Namespace) -> int:
    """Check every output path and number first, compare, then write and print."""
    plan = _compute(args.plan_compute)
    report = check_out(args.report, PAGE, "--report") if args.report else None
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise UserError(f"--plots {args.plots}: is a file, not a directory")
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    cmp = compare(args.sources, args.metric, columns=args.columns, plan_compute=plan, n_boot=args.bootstrap,
                  seed=args.seed, names=names)
    if args.out:
        atomic_write_json(Path(args.out), cmp.record)
    runs = {r.name: (r.fit.table.col("flops"), r.fit.table.col("loss")) for r in cmp.recipes}
    if args.plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        write_figures([comparison(cmp.record, runs)], Path(args.plots) / "compare.html",
                      f"scaling compare on {cmp.record['metric']}")
    if report:
        title = f"Recipes compared: {', '.join(r.name for r in cmp.recipes)}"
        atomic_write_bytes(report, page(title, f"<h1>{title}</h1>\n" + comparison_section(cmp)).encode())
    print(json.dumps(cmp.record, default=float) if args.json else cmp.summary())
    return 0
