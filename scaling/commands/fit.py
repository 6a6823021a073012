"""`scaling fit RESULTS`: Chinchilla's three approaches with bootstrap intervals."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from scaling.base.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit", help="fit Chinchilla's three approaches to a results table",
        description="Fit Chinchilla's Approaches 1-3 to a table of runs (results.parquet from "
                    "`scaling sweep collect`, or any CSV/parquet), with bootstrap intervals.")
    p.add_argument("results", help="results.parquet or any .csv/.parquet with params, tokens, loss columns")
    p.add_argument("--approach", default="auto",
                   help="comma list of 1,2,3 (default: every approach the data allow; naming one makes "
                        "its refusal an error)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples of the runs for 95%% intervals (0: none; default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--columns", default=None, metavar="NAME=COL,...",
                   help="map column names, e.g. params=\"Model Size\",flops=\"Training FLOP\" "
                        "(names: params, tokens, loss, flops, budget, unique_tokens, run)")
    p.add_argument("--curves", default=None, metavar="FILE",
                   help="loss curves (run, tokens, flops, loss) for approach 1; default: curves.parquet "
                        "beside RESULTS if present")
    p.add_argument("--drop-top-loss", type=int, default=0, metavar="K",
                   help="drop the K highest-loss runs first (the Chinchilla replication drops 5)")
    p.add_argument("--holdout-top", type=int, default=0, metavar="K",
                   help="also fit approach 3 without the K largest-compute runs and report its error on them")
    p.add_argument("--no-holdout", action="store_true",
                   help="skip the default held-out check (refit without the largest budget, predict its runs)")
    p.add_argument("--rollout", action="store_true",
                   help="leave-future-out: fit on the smallest k budgets, predict every larger one, for each k; "
                        "errors against the extrapolation factor in compute")
    p.add_argument("--fix", default=None, metavar="NAME=VALUE,...",
                   help="hold approach 3 parameters fixed, e.g. E=1.69 (names: E, A, B, alpha, beta); "
                        "with --rollout, the table shows free and fixed side by side")
    p.add_argument("--method", choices=("vp", "grid"), default="vp",
                   help="approach 3 optimiser: vp = variable projection (E, A, B in closed form on a fine "
                        "alpha-beta grid, then L-BFGS; default), grid = Chinchilla's 4,500 L-BFGS starts")
    p.add_argument("--profile", choices=("local", "parabola", "akima"), default="local",
                   help="approach 2's profile minimum: local = a parabola through the 5 sizes around the lowest "
                        "run (default), parabola = one through every run (Chinchilla), akima = an Akima spline")
    p.add_argument("--loss-noise", type=float, default=None, metavar="REL",
                   help="approach 2's bootstrap: redraw each run's loss with this relative noise (seed-to-seed, "
                        "e.g. 0.005); default: the runs' validation standard error (loss_se) where the table has it")
    p.add_argument("--repeat-stage1", choices=("unpenalised", "single-epoch", "joint"), default="unpenalised",
                   help="repeated data (a unique_tokens column): which runs fit the base law before R*_D, R*_N: "
                        "unpenalised = single-epoch runs no larger than N_opt of their data (default; joint when "
                        "too few), single-epoch = every run that saw each token at most once (the paper's), "
                        "joint = all seven parameters on all runs at once")
    p.add_argument("--full-grid", action="store_true",
                   help="with --method grid: run all 4,500 starts to convergence instead of the best-scoring 256")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE (for `scaling plan --fit`)")
    p.add_argument("--plots", default=None, metavar="DIR", help="write DIR/fit.html with the figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_approaches(spec: str) -> tuple[tuple, bool]:
    if spec in ("auto", "all", ""):
        return (1, 2, 3), spec == "all"
    try:
        ks = tuple(sorted({int(s) for s in spec.split(",") if s.strip()}))
    except ValueError:
        raise UserError(f"--approach: expected a comma list of 1, 2, 3, got {spec!r}") from None
    if not ks or any(k not in (1, 2, 3) for k in ks):
        raise UserError(f"--approach: expected a comma list of 1, 2, 3, got {spec!r}")
    return ks, True


def parse_fixed(spec: str | None) -> dict:
    """'E=1.69,alpha=0.34' -> {'E': 1.69, 'alpha': 0.34}."""
    from scaling.fit.law import PARAMS

    out = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, val = (t.strip() for t in part.partition("="))
        if not sep or key not in PARAMS:
            raise UserError(f"--fix: {part.strip()!r} is not NAME=VALUE with NAME one of {', '.join(PARAMS)}")
        try:
            v = float(val)
        except ValueError:
            raise UserError(f"--fix: {key} = {val!r} is not a number") from None
        if not math.isfinite(v) or (key in ("E", "A", "B") and v <= 0) or (key in ("alpha", "beta") and v <= 0):
            raise UserError(f"--fix: {key} = {val} must be a finite positive number")
        if key in out:
            raise UserError(f"--fix: {key} given twice")
        out[key] = v
    if spec is not None and not out:
        raise UserError("--fix: expected NAME=VALUE, e.g. E=1.69")
    return out


def _f(v, digits=6) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}"


def _ci(ci, k) -> str:
    lo, hi = (ci or {}).get(k, [None, None])
    return "" if lo is None else f"[{_f(lo)}, {_f(hi)}]"


def _some(ids: list, k: int = 12) -> str:
    return ", ".join(map(str, ids[:k])) + (f", ... ({len(ids) - k} more)" if len(ids) > k else "")


def _format_repeat(dc: dict, boot: str) -> list:
    s1, s2 = dc["stage1"], dc["stage2"]
    out = ["", "Repeated data (Muennighoff et al.): D' = U + U R*_D (1 - exp(-R_D/R*_D)), "
               "N' = U_N + U_N R*_N (1 - exp(-R_N/R*_N)), fitted in stages",
           f"  stage 1, the base law above: " + (
               "held fixed (--fix), no runs fitted" if s1["mode"].startswith("held") else
               "none: all seven parameters fitted jointly on all runs" if s1["mode"] == "joint" else
               f"{s1['n_runs']} runs ({s1['mode']}: of {s1['n_single_epoch']} single-epoch runs, "
               f"{s1['n_single_epoch_excess_params']} are larger than N_opt of their data; {s1['rounds']} round(s)): "
               + _some(s1["runs"])),
           f"  stage 2, R* with the base law held: all {s2['n_runs']} runs; {s2['n_informative']} inform R* "
           f"({s2['n_repeated']} repeat data, {s2['n_excess_params']} have excess parameters): " + _some(s2["runs"]),
           f"  {'':18}{'value':>14}   {boot}"]
    for k, label in (("R_star_D", "R*_D"), ("R_star_N", "R*_N")):
        out.append(f"  {label:18}{_f(dc[k], 8):>14}   {_ci(dc.get('ci'), k)}")
    if dc.get("bootstrap_covers") and boot:
        out.append(f"  interval: {dc['bootstrap_covers']}")
    return out


def _held_out_outliers(h3: dict) -> list[str]:
    """The held-out budget's lowest-loss run and its worst-predicted one (one line when they are
    the same run), and a plain word on runs far below the law."""
    from scaling.fit.report import below_law_line, held_out_extremes

    best, worst = held_out_extremes(h3)
    lines = [f"  its lowest loss: {best['run']}, {best['loss']:.4f} against {best['predicted']:.4f} predicted "
             f"({100 * best['rel_error']:+.1f}%" + (", also its worst prediction)" if worst is best else ")")]
    if worst is not best:
        lines.append(f"  its worst prediction: {worst['run']}, {worst['loss']:.4f} against {worst['predicted']:.4f} "
                     f"predicted ({100 * worst['rel_error']:+.1f}%)")
    if h3.get("below_law"):
        lines.append(f"  {below_law_line(h3['below_law'])}")
    return lines


def format_fit(fit: dict) -> str:
    out = [f"{fit['n_runs']} runs from {fit['source']} (N from column {fit['params_column']!r})"]
    boot = f"95% interval, {fit['bootstrap']} bootstrap resamples (seed {fit['seed']})" if fit["bootstrap"] else ""
    a3 = fit.get("approach3")
    if a3:
        held = ", ".join(f"{k} = {v:g}" for k, v in (a3.get("fixed") or {}).items())
        out += ["", f"Approach 3: L(N, D) = E + A/N^alpha + B/D^beta   ({a3['n_points']} runs, "
                    f"{a3['n_sizes']} sizes; Huber sum {a3['objective']:.6e}, "
                    + (f"best of {a3['n_starts']} starts" if a3.get("method") == "grid" else
                       f"variable projection on {a3['n_starts']} (alpha, beta) cells, {a3['n_refined']} polished")
                    + (f"; held fixed: {held}" if held else "") + ")",
                f"  {'':18}{'value':>14}   {boot}"]
        for k, label in (("E", "E"), ("A", "A"), ("B", "B"), ("alpha", "alpha"), ("beta", "beta"),
                         ("a", "a  (N_opt ∝ C^a)"), ("b", "b  (D_opt ∝ C^b)"), ("G", "G"),
                         ("tokens_per_param", f"D/N at {a3['c_ref']:.3g}")):
            out.append(f"  {label:18}{_f(a3[k], 8):>14}   {_ci(a3['ci'], k)}")
        if a3.get("flop_count"):
            out.append(f"  a, b, G and D/N under C = D x FLOPs per token: {a3['flop_count']['flops_count']}")
        if "bootstrap_degenerate" in a3:
            out.append(f"  degenerate bootstrap fits (a term vanished): {a3['bootstrap_degenerate']} of {fit['bootstrap']}")
        if "data_constrained" in a3:
            out += _format_repeat(a3["data_constrained"], boot)
    rows = [(k, fit[f"approach{k}"]) for k in (1, 2) if f"approach{k}" in fit]
    if rows or a3:
        out += ["", "Compute-optimal allocation: N_opt ∝ C^a, D_opt ∝ C^b",
                f"  {'approach':10}{'a':>10}  {'95% interval':24}{'b':>10}  {'95% interval':24}points"]
        for k, r in rows + ([(3, a3)] if a3 else []):
            extra = {1: f"{r['n_points']} runs" + ("" if r.get("from_curves") else " (final points)"),
                     2: f"{r.get('n_budgets', '?')} budgets", 3: f"{r['n_points']} runs"}[k]
            out.append(f"  {k:<10}{_f(r['a'], 4):>10}  {_ci(r['ci'], 'a'):24}{_f(r['b'], 4):>10}  "
                       f"{_ci(r['ci'], 'b'):24}{extra}")
    a2 = fit.get("approach2")
    if a2 and fit["bootstrap"]:
        out.append(f"  approach 2's interval: {a2['bootstrap_covers']}")
    ho = fit.get("holdout")
    if ho:
        out += ["", f"Held out the {ho['k']} largest-compute runs; approach 3 fitted on the rest predicts them:",
                f"  {'run':>14}{'N':>10}{'D':>10}{'loss':>9}{'predicted':>11}{'error':>9}"]
        for r in ho["runs"]:
            out.append(f"  {str(r['run'])[:14]:>14}{r['params']:>10.3g}{r['tokens']:>10.3g}{r['loss']:>9.4f}"
                       f"{r['predicted']:>11.4f}{100 * r['rel_error']:>8.2f}%")
        out.append(f"  mean |error| {100 * ho['mean_abs_rel_error']:.2f}%, max {100 * ho['max_abs_rel_error']:.2f}%")
    hb = fit.get("holdout_budget")
    if hb:
        out += ["", f"Held-out check: fitted without the largest budget ({hb['budget']:.3g} FLOPs, {hb['n_runs']} runs), "
                    f"{hb['extrapolation']:.2f}x the compute of the largest budget fitted:"]
        h3 = hb.get("approach3")
        if h3:
            if h3.get("degenerate"):
                out.append(f"  (the law fitted without it is degenerate: {h3['degenerate']})")
            out += [f"  approach 3 predicts its runs' loss to {100 * h3['mean_abs_rel_error']:.2f}% on average "
                    f"(max {100 * h3['max_abs_rel_error']:.2f}%)"]
            out += _held_out_outliers(h3)
        h2 = hb.get("approach2")
        if h2 and h2["rel_error"] is not None:
            out.append(f"  approach 2 (a = {h2['a']:.3f}) predicts N_opt {h2['N_opt_predicted']:.3g} against "
                       f"{h2['N_opt_observed']:.3g} observed ({100 * h2['rel_error']:+.1f}%)")
        out += [f"  {w}" for w in hb["warnings"]]
    if fit.get("rollout"):
        from scaling.fit.rollout import format_rollout
        out += format_rollout(fit["rollout"])
    warns = list(fit["warnings"])
    for k in (1, 2, 3):
        warns += fit.get(f"approach{k}", {}).get("warnings", [])
    if warns:
        out += [""] + [f"warning: {w}" for w in warns]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from scaling.fit import FitOptions, fit_all, find_curves, load_curves, load_runs, parse_columns
    from scaling.base.rundir import atomic_write_json

    approaches, explicit = parse_approaches(args.approach)
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
    if args.holdout_top < 0:
        raise UserError(f"--holdout-top: must be >= 0, got {args.holdout_top}")
    table = load_runs(args.results, parse_columns(args.columns), drop_top_loss=args.drop_top_loss)
    if table.hint and not args.json:
        print(f"note: {table.hint}", file=sys.stderr)
    curves = None
    if 1 in approaches:
        cpath = find_curves(args.results, args.curves)
        if cpath is not None:
            curves = load_curves(cpath, table)
    if args.full_grid and args.method != "grid":
        raise UserError("--full-grid runs Chinchilla's 4,500 starts: it needs --method grid")
    if args.loss_noise is not None and not (math.isfinite(args.loss_noise) and 0 <= args.loss_noise < 1):
        raise UserError(f"--loss-noise: a relative noise in [0, 1), got {args.loss_noise}")
    if args.rollout and not ({2, 3} & set(approaches)):
        raise UserError("--rollout predicts with approaches 2 and 3: it needs --approach to include one of them")
    fixed = parse_fixed(args.fix)
    if fixed and 3 not in approaches:
        raise UserError("--fix holds approach 3 parameters; it needs --approach to include 3")
    opts = FitOptions(approaches=approaches, explicit=explicit, n_boot=args.bootstrap, seed=args.seed,
                      holdout_top=args.holdout_top, rollout=args.rollout, fixed=fixed, method=args.method,
                      profile=args.profile, loss_noise=args.loss_noise, repeat_stage1=args.repeat_stage1,
                      holdout_budget=not args.no_holdout, refine=None if args.full_grid else 256,
                      progress=not args.no_progress and sys.stderr.isatty())
    fit = fit_all(table, curves, opts)
    if args.out:
        atomic_write_json(Path(args.out), fit)
    if args.plots:
        from scaling.figures import fit_figures
        from scaling.figures.page import write_figures
        page = write_figures(fit_figures(fit, table, curves), Path(args.plots) / "fit.html",
                             f"scaling fit: {table.source}")
        if not args.json:
            print(f"figures: {page}", file=sys.stderr)
    if args.json:
        print(json.dumps(fit))
    else:
        print(format_fit(fit))
    return 0
