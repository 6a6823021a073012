"""`scaling plan`: a fitted law extrapolated to a training plan, its optimum and its cost.

The command parses its arguments into a `PlanRequest` (the parser is the plan's own,
scaling/plan/request.py, since `scaling report --plan` takes the same arguments), builds the
record (scaling/plan/record.py), and prints it as text (scaling/plan/text.py) or JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling.base.rundir import atomic_write_json
from scaling.plan.record import build
from scaling.plan.request import PlanRequest, add_plan_parser
from scaling.plan.text import format_all


def register(subparsers) -> None:
    add_plan_parser(subparsers).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    r, law, flop, assume = build(PlanRequest.from_args(args))
    if args.plots:
        # Here, not above: the figures load scaling.fit and polars, which a plan without --plots never needs.
        from scaling.figures import plan_figures
        from scaling.figures.page import write_figures

        page = write_figures(plan_figures(r, law, flop), Path(args.plots) / "plan.html", "scaling plan")
        print(f"figures: {page}", file=sys.stderr)
    if args.out:
        atomic_write_json(Path(args.out), r)
    if args.json:
        print(json.dumps(r))
    else:
        print(format_all(r, assume))
    return 0
