"""`scaling report SWEEP_DIR_OR_RESULTS --out report.html`: one self-contained HTML document."""

from __future__ import annotations

import argparse
import sys

from scaling import report
from scaling.base.errors import UserError
from scaling.figures.page import PAGE, check_out
from scaling.fit.compare import DEFAULT_METRIC, compare


def add_inputs(p: argparse.ArgumentParser) -> None:
    """The arguments `report` and `plot` share: where the runs, the fit and the plan come from."""
    p.add_argument("source", metavar="SWEEP_DIR_OR_RESULTS",
                   help="a sweep directory (its results.parquet, curves.parquet and fit.json) or a results table")
    p.add_argument("--fit", default=None, metavar="FILE",
                   help="fit.json from `scaling fit --out` (default: fit.json beside the results; without one, "
                        "the runs are fitted here)")
    p.add_argument("--columns", default=None, metavar="NAME=COL,...",
                   help="as `scaling fit --columns` (default: the fit's own N column)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="bootstrap resamples when there is no fit.json and the runs are fitted here (default 200)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--plan", nargs=argparse.REMAINDER, default=None, metavar="ARGS",
                   help="last: `scaling plan`'s arguments, e.g. --plan --params 20B --tokens 1T --inference-tokens 1T "
                        "(its law is the default unless they give --fit)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="one self-contained HTML report: runs, fits, held-out check, plan, figures",
        description="Write one HTML file (plotly.js embedded once; opens offline) with the runs table, the fits with "
                    "intervals and warnings, the held-out check, the plan and its bill, and every figure.")
    p.add_argument("--compare-with", nargs="+", default=None, metavar="SWEEP",
                   help="add a section comparing this sweep (the reference) with these sweeps or tables, as "
                        "`scaling compare` does")
    p.add_argument("--compare-metric", default=None, metavar="COLUMN",
                   help="the yardstick of --compare-with (default: `scaling compare`'s, bpb_clm)")
    add_inputs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = check_out(args.out, PAGE)
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
    if args.compare_metric and not args.compare_with:
        raise UserError("--compare-metric is the yardstick of --compare-with: give the sweeps to compare with")
    inp = report.load(args.source, args.fit, args.plan, args.columns, args.bootstrap)
    if args.compare_with:
        inp.recipes = compare([args.source, *args.compare_with], args.compare_metric or DEFAULT_METRIC,
                              columns=args.columns, n_boot=max(args.bootstrap, 20))
    path = report.write(inp, out)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)", file=sys.stderr)
    print(path)
    return 0
