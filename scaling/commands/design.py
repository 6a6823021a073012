"""`scaling design RESULTS_OR_SWEEP --compute C`: the next runs, chosen to narrow one interval.

The method is scaling/fit/design.py's (docs/design.md); the candidates are a list (`--candidates`),
the sweep's own models at IsoFLOP budgets (a sweep directory), or a grid of (N, D) around the
law's frontier (any other table); the runs are printed, and written with -o as a sweep file
(scaling/sweep/propose.py) or a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import polars as pl

from scaling.base.errors import UserError
from scaling.base.flops import parse_flop_count
from scaling.fit import compute
from scaling.fit.design import (SAME_RUN_RTOL, TARGETS, Z95, Candidates, budgets_between, choose, drop_runs,
                                format_design, grid_candidates, read_candidates)
from scaling.fit.law import PARAMS, LawData, degenerate, fit_law_vp, too_few
from scaling.fit.report import read_fit_file
from scaling.fit.table import column_mapping, load_runs
from scaling.sweep.collect import RESULTS
from scaling.sweep.propose import load_template, write

PLAN_FACTOR = 100.0      # default plan: 100x the largest run's compute
FIT = "fit.json"         # a sweep's fit (`scaling fit ... --out`), read as `scaling report` reads it
OUT_KINDS = (".toml", ".csv", ".parquet")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "design", help="the next runs of a sweep, chosen to narrow the interval of the plan's loss, a or N_opt",
        description="Given a results table (or a sweep directory) and a compute allowance, propose the runs "
                    "that most shrink the 95% interval of the target within it (docs/design.md).")
    p.add_argument("results", metavar="RESULTS_OR_SWEEP",
                   help="a sweep directory (its results.parquet and sweep.toml), or any .csv/.parquet of runs")
    p.add_argument("--compute", required=True, metavar="C", help="FLOPs the new runs may cost in all, e.g. 2e15")
    p.add_argument("--target", choices=TARGETS, default="loss-at-plan",
                   help="what to narrow: the loss at the plan's optimum (default), the frontier's exponent a, or "
                        "N_opt, each at --plan-compute")
    p.add_argument("--plan-compute", default=None, metavar="C",
                   help=f"the plan's training FLOPs (default: {PLAN_FACTOR:g}x the largest run's)")
    p.add_argument("--candidates", default=None, metavar="FILE",
                   help="pick from these runs: a .csv/.parquet with N and D (params, tokens) and optionally C (flops)")
    p.add_argument("-o", "--out", default=None, metavar="FILE",
                   help="write the runs: .toml, a sweep file to launch into the sweep directory; .csv or .parquet, "
                        "a table (params, tokens, flops)")
    p.add_argument("--fit", default=None, metavar="FILE",
                   help="read the runs as this fit (`scaling fit --out`) did: its N column, loss column, FLOP count "
                        "and held parameters (default: fit.json beside a sweep's results.parquet, if there)")
    p.add_argument("--columns", default=None, metavar="NAME=COL,...", help="map the table's column names, as in fit")
    p.add_argument("--drop-top-loss", type=int, default=0, metavar="K", help="drop the K highest-loss runs first")
    p.add_argument("--flops", default=None, metavar="COUNT",
                   help="how compute is counted: 6nd, k*N^e or encdec:... (default: the table's, as in fit)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def _flops(flag: str, value: str) -> float:
    try:
        c = float(value)
    except ValueError:
        c = math.nan
    if not (math.isfinite(c) and c > 0):
        raise UserError(f"{flag}: a positive number of FLOPs like 2e15, got {value!r}")
    return c


def _source(arg: str):
    """(the results table, the sweep directory's template or None)."""
    p = Path(arg)
    if p.is_dir():
        if not (p / RESULTS).exists():
            raise UserError(f"{p}: no {RESULTS} (run `scaling sweep collect {p}` first)")
        return p / RESULTS, load_template(p)
    return p, load_template(p.parent) if p.name == RESULTS else None


def _check_out(out: Path | None, template, candidates: str | None) -> None:
    if out is None:
        return
    if out.suffix.lower() not in OUT_KINDS:
        raise UserError(f"-o {out}: expected a .toml sweep file or a .csv/.parquet table")
    if out.suffix.lower() == ".toml" and template is None:
        raise UserError(f"-o {out}: a sweep file needs the sweep the runs came from (give its directory, or its "
                        "results.parquet); for this table write the runs as a table instead, -o runs.csv")
    if out.suffix.lower() == ".toml" and candidates:
        raise UserError(f"-o {out}: runs picked from --candidates {candidates} are (N, D) points, not this sweep's "
                        "sizes; write them as a table (-o runs.csv), or leave out --candidates")
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        raise UserError(f"-o {out}: no such directory {out.parent}")


def _fit_file(results: Path, given: str | None) -> tuple[dict | None, Path | None]:
    """The fit whose reading of the runs the design follows: --fit, else a sweep's fit.json."""
    path = Path(given) if given else results.parent / FIT
    if given is None and (results.name != RESULTS or not path.exists()):
        return None, None
    rec = read_fit_file(path)
    if not isinstance(rec.get("params_column"), str) or not isinstance(rec.get("approach3"), dict):
        raise UserError(f"{path}: not an approach 3 fit from `scaling fit --out` (no params_column or approach3)")
    fixed = rec["approach3"].get("fixed") or {}
    if not (isinstance(fixed, dict) and all(k in PARAMS and isinstance(v, (int, float)) and v > 0
                                            for k, v in fixed.items())):
        raise UserError(f"{path}: approach3.fixed is not a set of positive E, A, B, alpha, beta values")
    return rec, path


def _columns(args, rec: dict | None) -> dict:
    """--columns, with N and the loss read from the columns the fit read them from (as `scaling
    report` does): a demo sweep's fit is of params_nonembed, and a law of total N would
    answer a different question than the fit.json the user plans from."""
    cols = column_mapping(args.columns)
    if rec is not None:
        if "params" not in cols and rec["params_column"] != "params":
            cols["params"] = rec["params_column"]
        if rec.get("target") and "loss" not in cols:
            cols["loss"] = rec["target"]    # a task's loss (`scaling fit --target`)
    return cols


def _fit_notes(rec: dict | None, path: Path | None, table, own_count: bool) -> list[str]:
    if rec is None:
        return []
    what = (f"N = {table.params_column}" + (f", loss = {rec['target']}" if rec.get("target") else "")
            + (", its FLOP count" if own_count else "")
            + (f", {', '.join(rec['approach3']['fixed'])} held" if rec["approach3"].get("fixed") else ""))
    notes = [f"runs read as {path} read them ({what}); the law refitted here"]
    if rec.get("n_runs") != table.df.height:
        notes.append(f"{path} was fitted on {rec.get('n_runs')} runs; the table now holds {table.df.height} usable "
                     "runs (the design uses them all; refit with `scaling fit`)")
    return notes


def _candidates(fit, count, table, template, c, allowance, plan) -> Candidates:
    """Without a list: the sweep's own models at IsoFLOP budgets, else a grid around the frontier."""
    budgets = budgets_between(c, allowance, plan)
    if template is None:
        return grid_candidates(fit.params, count, budgets)
    n_opt = compute.optimal(fit.params, budgets, count)[0]
    rows = template.candidates(budgets, n_opt, nonembed=table.params_column == "params_nonembed")
    if not rows:
        raise UserError(f"{template.dir}: no model of this sweep's size rule lies near the optimum of any budget "
                        f"from {budgets[0]:.3g} to {budgets[-1]:.3g} FLOPs that the sweep does not already hold")
    n, d, cc, keys = zip(*rows)
    return Candidates(n, d, cc, keys=list(keys))


def run(args: argparse.Namespace) -> int:
    """Check everything, fit, choose, then write (atomically) and print."""
    allowance = _flops("--compute", args.compute)
    plan = _flops("--plan-compute", args.plan_compute) if args.plan_compute is not None else None
    if args.drop_top_loss < 0:
        raise UserError(f"--drop-top-loss: must be >= 0, got {args.drop_top_loss}")
    results, template = _source(args.results)
    rec, rec_path = _fit_file(results, args.fit)
    out = Path(args.out) if args.out else None
    _check_out(out, template, args.candidates)
    table = load_runs(results, _columns(args, rec), drop_top_loss=args.drop_top_loss, invalid="drop")
    stated = parse_flop_count(args.flops) if args.flops else (compute.count_of(rec) if rec is not None else None)
    count, _, count_warnings = compute.count_for_table(table, stated)
    n, d, loss, c = (table.col(k) for k in ("params", "tokens", "loss", "flops"))
    why = too_few(n)
    if why:
        raise UserError(f"{results}: {why}")
    plan = plan if plan is not None else PLAN_FACTOR * float(c.max())
    listed, known = _listed(args.candidates, count, n, d)
    cheapest = float(listed.c.min()) if listed is not None else float(c.min())
    if cheapest > allowance:
        raise UserError(f"--compute {allowance:.3g}: less than the cheapest "
                        + (f"candidate ({cheapest:.3g} FLOPs)" if listed is not None else
                           f"run of the table ({cheapest:.3g} FLOPs); no new run fits in it"))
    data = LawData.from_arrays(n, d, loss)
    # The fit's held parameters hold here too (the law is then the fit's); the interval still
    # treats them as free, so it is the wider one.
    fit = fit_law_vp(data, fixed=(rec or {}).get("approach3", {}).get("fixed") or None)
    bad = degenerate(fit.params, n, d)
    if bad:
        raise UserError(f"{results}: the law fitted to these runs is degenerate ({bad}): no interval to narrow")
    cands = listed if listed is not None else _candidates(fit, count, table, template, c, allowance, plan)
    design = choose(data, fit, cands, allowance, target=args.target, plan_compute=plan, count=count)
    design.notes[:0] = _fit_notes(rec, rec_path, table, not args.flops) + ([
        f"{known} of the {known + len(listed)} candidates are runs of the table already (N and D within "
        f"{100 * SAME_RUN_RTOL:g}%): left out"] if known else [])
    if out is not None and design.picks:
        _write(out, design, template, args)
    if not args.json:
        for w in [*table.warnings, *count_warnings, *([table.hint] if table.hint else [])]:
            print(f"note: {w}", file=sys.stderr)   # how the table was read, as `scaling fit` says it
    print(json.dumps(design.to_dict()) if args.json else format_design(design))
    return 0


def _listed(path: str | None, count, n, d) -> tuple[Candidates | None, int]:
    """--candidates less the runs the table already has, and how many those were."""
    if not path:
        return None, 0
    listed, known = drop_runs(read_candidates(path, count), n, d)
    if not len(listed):
        raise UserError(f"--candidates {path}: every candidate is a run of the table already (N and D within "
                        f"{100 * SAME_RUN_RTOL:g}%); nothing new to choose")
    return listed, known


def _write(out: Path, design, template, args) -> None:
    if out.suffix.lower() == ".toml":
        header = (f"Written by `scaling design {args.results} --compute {args.compute} --target {args.target}`: "
                  f"{len(design.picks)} new run(s) into the same sweep directory.\n  scaling sweep launch {out}")
        write(template, [p.key for p in design.picks], out, header)
        return
    df = pl.DataFrame({"params": [p.n for p in design.picks], "tokens": [p.d for p in design.picks],
                       "flops": [p.c for p in design.picks],
                       "half_width_after": [Z95 * p.sd_after for p in design.picks]})
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        df.write_parquet(tmp) if out.suffix.lower() == ".parquet" else df.write_csv(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
