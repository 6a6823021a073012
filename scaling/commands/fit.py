"""`scaling fit RESULTS`: Chinchilla's three approaches with bootstrap intervals."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.flops import parse_flop_count
from scaling.figures.page import write_figures
from scaling.fit import FitOptions, FitWarning
from scaling.fit.law import PARAMS
from scaling.fit.result import fit as fit_runs
from scaling.fit.tasklaw import Step2Options


def register(subparsers) -> None:
    """The `fit` sub-command and its flags (each a field of `scaling.fit.FitOptions`)."""
    p = subparsers.add_parser(
        "fit", help="fit Chinchilla's three approaches to a results table",
        description="Fit Chinchilla's Approaches 1-3 to a table of runs (results.parquet from "
                    "`scaling sweep collect`, or any CSV/parquet), with bootstrap intervals.")
    p.add_argument("results", help="results.parquet or any .csv/.parquet with params, tokens, loss columns, a "
                                   "sweep directory (its results.parquet), or a folder of OLMo ladder runs (SIZE-MxC.csv)")
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
    p.add_argument("--flops", default=None, metavar="COUNT",
                   help="how the runs' compute is counted, for the optimum, a, b and the frontier: 6nd, k*N^e, "
                   "or encdec:vocab=V,seq_len=S[,nonembed] (default: the lab's formula from the table's shape "
                   "columns, else 6ND)")
    p.add_argument("--target", default=None, metavar="COLUMN",
                   help="fit this column instead of loss (a task's loss, task.NAME.bpb), and the two-step task "
                        "law: step 2 fits its accuracy (task.NAME.acc) as a sigmoid of it over the curves' points")
    p.add_argument("--accuracy", default=None, metavar="COLUMN",
                   help="with --target: step 2's accuracy column (default: the target's task.NAME.acc)")
    p.add_argument("--chance", type=float, default=None, metavar="ACC",
                   help="with --target: the task's chance accuracy (0.25 for four choices); step 2 is refused "
                        "where no point clears it")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE (for `scaling plan --fit`)")
    p.add_argument("--plots", default=None, metavar="DIR", help="write DIR/fit.html with the figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_approaches(spec: str) -> tuple[tuple, bool]:
    """--approach: 'auto' (every approach the data allow), 'all', or a comma list; and
    whether the user named them (then a refusal is an error)."""
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


def run(args: argparse.Namespace) -> int:
    """Check the arguments, fit through the same object a notebook gets (`scaling.fit`), print."""
    approaches, explicit = parse_approaches(args.approach)
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
    if args.holdout_top < 0:
        raise UserError(f"--holdout-top: must be >= 0, got {args.holdout_top}")
    if args.full_grid and args.method != "grid":
        raise UserError("--full-grid runs Chinchilla's 4,500 starts: it needs --method grid")
    if args.loss_noise is not None and not (math.isfinite(args.loss_noise) and 0 <= args.loss_noise < 1):
        raise UserError(f"--loss-noise: a relative noise in [0, 1), got {args.loss_noise}")
    if args.rollout and not ({2, 3} & set(approaches)):
        raise UserError("--rollout predicts with approaches 2 and 3: it needs --approach to include one of them")
    if args.target is None and (args.accuracy or args.chance is not None):
        raise UserError("--accuracy and --chance are step 2's: they need --target task.NAME.bpb")
    if args.chance is not None and not 0 <= args.chance < 1:
        raise UserError(f"--chance: an accuracy in [0, 1), got {args.chance}")
    fixed = parse_fixed(args.fix)
    if fixed and 3 not in approaches:
        raise UserError("--fix holds approach 3 parameters; it needs --approach to include 3")
    opts = FitOptions(approaches=approaches, explicit=explicit, n_boot=args.bootstrap, seed=args.seed,
                      holdout_top=args.holdout_top, rollout=args.rollout, fixed=fixed, method=args.method,
                      profile=args.profile, loss_noise=args.loss_noise, repeat_stage1=args.repeat_stage1,
                      holdout_budget=not args.no_holdout, refine=None if args.full_grid else 256,
                      progress=not args.no_progress and sys.stderr.isatty(),
                      flops=parse_flop_count(args.flops) if args.flops else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)     # the text prints them, in its own section
        fit = fit_runs(args.results, args.columns, curves=args.curves, drop_top_loss=args.drop_top_loss,
                       invalid="drop", options=opts, target=args.target, accuracy=args.accuracy,
                       step2=Step2Options(chance=args.chance))
    if fit.table.hint and not args.json:
        print(f"note: {fit.table.hint}", file=sys.stderr)
    if args.out:
        fit.to_json(args.out)
    if args.plots:
        page = write_figures(fit.plot.all(), Path(args.plots) / "fit.html", f"scaling fit: {fit.table.source}")
        if not args.json:
            print(f"figures: {page}", file=sys.stderr)
    print(fit.to_json() if args.json else fit.summary())
    return 0
