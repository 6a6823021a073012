"""`scaling plot KIND SWEEP_DIR_OR_RESULTS --out FILE`: one figure, as HTML, PNG or SVG."""

from __future__ import annotations

import argparse

from scaling import report
from scaling.base.errors import UserError
from scaling.commands.report import add_inputs
from scaling.figures.page import PAGE, STATIC, check_out, write_figure


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot", help="one figure of a sweep, its fit or a plan, as HTML, PNG or SVG",
        description="Draw one figure: " + ", ".join(report.KINDS) + ". HTML embeds plotly.js; PNG and SVG need kaleido "
                    "and Chrome or Chromium (offline).")
    p.add_argument("kind", metavar="KIND", help="one of " + ", ".join(report.KINDS))
    add_inputs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report.check_kind(args.kind)
    out = check_out(args.out, PAGE + STATIC)
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
    inp = report.load(args.source, args.fit, args.plan, args.columns, args.bootstrap)
    fig = report.figure(inp, args.kind)
    path = write_figure(fig, out, f"scaling plot {args.kind}: {inp.results}")
    print(path)
    return 0
