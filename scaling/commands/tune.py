"""`scaling tune`: per-size hyperparameter studies with Optuna, run as submitit jobs, and the
rules fitted to them; `scaling tune status DIR`: where each study stands."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from scaling.base.config import TrainConfig, format_count, parse_count
from scaling.base.errors import UserError
from scaling.jobs.executors import Resources, SlurmSettings, check_executor
from scaling.sweep.spec import load_sweep, model_stats
from scaling.tuning.figures import write_figure
from scaling.tuning.launch import Tuner
from scaling.tuning.rules import at_edge
from scaling.tuning.status import format_status, tune_status
from scaling.tuning.study import SizeStudy, Space, TuneConfig, load, size_key, study_names


def register(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="per-size learning-rate (and batch, beta2) search with Optuna",
        description="One Optuna study per model size (--params, --sizes, or the sizes of a --sweep file), each "
        "trial a real run in OUT/<size>/trials/<n>/ as a submitit job (--executor local|slurm|debug, with the "
        "sweep file's [executor] settings). Trials ask the study when they start, report every validation point "
        "to a pruner, and resume after preemption. Rerunning continues every study. Writes OUT/<size>/best.json "
        "and OUT/tuned.json (best values per size, power-law fits with bootstrap intervals).",
    )
    p.add_argument("--params", help="one model size: 2M, 350M, ... or an integer")
    p.add_argument("--sizes", help="several sizes, comma-separated: 300K,1M,3M")
    p.add_argument("--sweep", type=Path, help="sweep file: its sizes, [train], [executor] and [slurm] settings")
    p.add_argument("--tokens", help="token budget D of every trial: 2M, 20M, ...")
    p.add_argument("--tokens-per-param", type=float, help="instead: D = this x N for each size (20 = Chinchilla)")
    p.add_argument("--out", help="study directory, e.g. tune/demo")
    p.add_argument("--trials", type=int, default=8, help="trials per size (default 8); failed ones are replaced")
    p.add_argument("--lr-min", type=float, default=1e-4, help="lower end of the log-uniform lr range (default 1e-4)")
    p.add_argument("--lr-max", type=float, default=3e-2, help="upper end of the log-uniform lr range (default 3e-2)")
    p.add_argument("--batch-range", metavar="LO:HI", help="also tune the batch size (sequences), log-uniform, e.g. 8:64")
    p.add_argument("--beta2-range", metavar="LO:HI", help="also tune AdamW beta2, log-uniform in 1 - beta2, e.g. 0.9:0.999")
    p.add_argument("--pruner", default="median", help="none, median (default) or halving (successive halving)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's run")
    p.add_argument("--executor", help="local (default; or the sweep file's), slurm (one job array) or debug (in-process)")
    p.add_argument("--jobs", type=int, default=None, help="trials at once (default: the sweep's parallelism, else 1)")
    p.add_argument("--wait", action="store_true", help="slurm: block until every trial has finished")
    p.add_argument("--plots", type=Path, help="write the figure (loss against lr per size, the fitted rule) here")
    p.add_argument("--corpus", "--data", dest="data", default=None,
                   help="token shards dir, as for `scaling train` (default: the embedded corpus)")
    p.add_argument("--seq-len", type=int, default=None, help="source window in tokens (default 128)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step when not tuned (default 16)")
    p.add_argument("--val-points", type=int, default=None, help="log-spaced validation points per run (default 8)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-progress", action="store_true", help="(kept for old scripts; jobs never show a bar)")
    p.set_defaults(func=run)
    s = p.add_subparsers(dest="tune_command", metavar="[status]")
    st = s.add_parser("status", help="per size: trials done, running, pending, pruned, failed, best so far")
    st.add_argument("dir", type=Path, help="study directory (the --out of `scaling tune`)")
    st.add_argument("--json", action="store_true", help="one JSON object per size")
    st.set_defaults(func=run_status)


def _range(text: str | None, flag: str, kind=float):
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return kind(lo), kind(hi)
    except ValueError:
        raise UserError(f"{flag}: expected LO:HI like {'8:64' if kind is int else '0.9:0.999'}, got {text!r}") from None


def _sizes(args):
    """(sizes, resources, slurm settings, default executor) from the flags or a sweep file."""
    given = [f for f, v in (("--params", args.params), ("--sizes", args.sizes), ("--sweep", args.sweep)) if v]
    if len(given) != 1:
        raise UserError("tune: give exactly one of --params, --sizes or --sweep" + (f" (got {', '.join(given)})" if given else ""))
    if args.tokens is not None and args.tokens_per_param is not None:
        raise UserError("tune: give --tokens or --tokens-per-param, not both")
    if args.tokens_per_param is not None and not args.tokens_per_param > 0:
        raise UserError(f"--tokens-per-param must be positive, got {args.tokens_per_param}")
    tokens = parse_count(args.tokens, "--tokens") if args.tokens is not None else None
    flags = {"seq_len": "--seq-len", "batch_size": "--batch-size", "val_points": "--val-points", "seed": "--seed"}
    over = {k: getattr(args, k) for k in ("seq_len", "batch_size", "val_points") if getattr(args, k) is not None}
    if args.sweep:
        sw = load_sweep(args.sweep)
        base = sw.runs[0].config.updated(
            lambda key: flags.get(key, f"--{key.replace('_', '-')}") if key in over else f"{args.sweep}: train.{key}",
            **over)
        resources, slurm, default = sw.resources, sw.slurm, sw.resources.default
        budgets: dict[str, set] = {}
        for r in sw.runs:
            budgets.setdefault(size_key(r.config.params), set()).add(r.tokens)
        keys = list(budgets)
        where = f"{args.sweep}"
    else:
        base = TrainConfig.build(dict(data=args.data, seed=args.seed, device=args.device, **over),
                                 lambda key: flags.get(key, f"--{key.replace('_', '-')}"))
        resources, slurm, default = Resources(), SlurmSettings(), "local"
        keys = [size_key(args.params)] if args.params else [
            size_key(x) for x in (p.strip() for p in args.sizes.split(",")) if x]
        budgets, where = {}, None
        if tokens is None and args.tokens_per_param is None:
            raise UserError("tune: give the token budget of every trial: --tokens or --tokens-per-param")
    if len(set(keys)) != len(keys):
        raise UserError(f"--sizes: a size is given twice ({args.sizes})")
    sizes = []
    for key in keys:
        t = replace(base, params=key, tokens=0, lr=None, out="-", progress=False, extra={})
        n, n_ne, fpt = model_stats(t)
        if tokens is not None:
            d = tokens
        elif args.tokens_per_param is not None:
            d = int(args.tokens_per_param * n)
        elif len(budgets[key]) == 1:
            (d,) = budgets[key]
        else:
            raise UserError(f"{where}: size {key} has several token budgets ({', '.join(format_count(b) for b in sorted(budgets[key]))}); "
                            f"choose one with --tokens or --tokens-per-param")
        sizes.append(SizeStudy(key, replace(t, tokens=int(d)), n, n_ne, fpt))
    return sizes, resources, slurm, default


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace as dc_replace

    if not args.out:
        raise UserError("tune: --out is required (the study directory, e.g. tune/demo)")
    space = Space(lr=(args.lr_min, args.lr_max), batch_size=_range(args.batch_range, "--batch-range", int),
                  beta2=_range(args.beta2_range, "--beta2-range"))
    sizes, resources, slurm, default = _sizes(args)
    kind = check_executor(args.executor or default)
    if args.jobs is not None:
        if args.jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {args.jobs}")
        resources = dc_replace(resources, parallelism=args.jobs)
    elif resources.parallelism is None and kind == "local" and not args.sweep:
        resources = dc_replace(resources, parallelism=1)  # the CPUs are shared by threads; one trial at a time
    cfg = TuneConfig(sizes=sizes, out=Path(args.out), space=space, trials=args.trials, pruner=args.pruner,
                     seed=args.seed)
    tuner = Tuner(cfg, kind, resources, slurm, wait=args.wait)
    doc = tuner.run()
    if tuner.in_flight:
        print(f"{args.out}: {len(tuner.submitted)} trial job(s) submitted; watch with: scaling tune status {args.out}")
        print("rerun the same command when they are done to write best.json and tuned.json")
        return 0
    print(report(Path(args.out), doc))
    if doc is not None and args.plots:
        print(f"wrote {write_figure(doc, args.plots)}")
    if tuner.stopped:
        print(f"a trial stopped before its budget: rerun the same command to resume {args.out}")
        return 1
    if doc is None:
        print(f"no completed trial in {args.out}: no best value")
        return 1
    return 0


def report(out: Path, doc: dict | None) -> str:
    """Per size: a table of its trials, the best beside the rule of N; then the fits."""
    lines = []
    sizes = {s["study"]: s for s in (doc or {}).get("sizes", [])}
    for name in study_names(out):
        study = load(out, name)
        s = sizes.get(name, {})
        lines.append(f"{name.removeprefix('lr-')}:")
        rows = [("trial", "lr", "batch", "beta2", "val loss", "status")]
        best_n = (s.get("best") or {}).get("trial")
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.params.get("lr", 0)):
            v = Space.values(t.params)
            status = t.user_attrs.get("outcome") or t.state.name.lower()
            if t.state.name == "RUNNING":
                status = "running"
            note = ("  <- best" if t.number == best_n else "") + ("  (rule of N)" if t.user_attrs.get("rule") else "")
            err = f"  {t.user_attrs['error']}" if t.user_attrs.get("error") and status != "completed" else ""
            rows.append((str(t.number), f"{v['lr']:.4g}" if "lr" in v else "-", str(v.get("batch_size", "")),
                         f"{v['beta2']:.4g}" if "beta2" in v else "",
                         f"{t.value:.4f}" if t.value is not None and t.state.name == "COMPLETE" else "-",
                         status + err + note))
        keep = [i for i in range(6) if i not in (2, 3) or any(r[i] for r in rows[1:])]
        widths = [max(len(r[i]) for r in rows) for i in keep]
        for r in rows:
            lines.append("  ".join(r[i].rjust(w) if i < 5 else r[i] for i, w in zip(keep, widths)).rstrip())
        b = s.get("best")
        if b:
            rule = f"rule of N: lr {s['lr_rule']:.3g}" if s.get("lr_rule") else "rule of N: -"
            if s.get("lr_rule_loss") is not None:
                rule += f", loss {s['lr_rule_loss']:.4f}"
            lo, hi = s["space"]["lr"]

            edge = "  (at the edge of the range: widen --lr-min/--lr-max)" if at_edge(b["lr"], lo, hi) else ""
            more = "".join(f", {k} {b[k]:.4g}" for k in ("batch_size", "beta2") if k in b)
            lines.append(f"best lr {b['lr']:.4g}{more} (trial {b['trial']}, val loss {b['loss']:.4f}); {rule}{edge}")
    for key, f in (doc or {}).get("fits", {}).items():
        x = "C" if f["x"] == "flops" else "N"
        lines.append(f"fit {key}*({x}) = {f['coef']:.4g} * {x}^{f['exp']:.4f}  (exp 95% CI {f['exp_ci'][0]:.3f} to "
                     f"{f['exp_ci'][1]:.3f}, {f['n_boot']} bootstrap resamples of the trials)")
    if doc is not None:
        lines.append(f"wrote {out / 'tuned.json'} and <size>/best.json")
    return "\n".join(lines)


def run_status(args: argparse.Namespace) -> int:
    rows = tune_status(args.dir, log=lambda line: print(line, file=sys.stderr))
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(format_status(rows))
    c = {k: sum(r["counts"][k] for r in rows) for k in ("completed", "running", "pending", "pruned", "failed")}
    print(f"{len(rows)} studies: " + ", ".join(f"{v} {k}" for k, v in c.items()))
    return 0
