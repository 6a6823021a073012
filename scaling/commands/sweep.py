"""`scaling sweep plan|launch|status|logs|cancel|collect|extend`: grids of runs from a sweep file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scaling.base.config import format_count
from scaling.base.errors import UserError
from scaling.base.memory import DDP_MIN_MICRO
from scaling.base.rundir import weight_bytes
from scaling.jobs.executors import EXECUTORS

# Each sub-command imports what it needs inside its run_* function (docs/architecture.md):
# `sweep status` reads run records and must not pay for the launch path (submitit, the
# shard reader) nor `collect` for polars' neighbours it does not use.


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="plan, launch, watch, cancel and collect grids of runs",
                              description="Sweeps of runs described by a TOML sweep file (see sweeps/).")
    sub = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND")

    plan = sub.add_parser("plan", help="the table of runs a sweep file expands to (nothing is launched)")
    plan.add_argument("file", type=Path, help="sweep file (TOML)")
    plan.add_argument("--executor", choices=EXECUTORS,
                      help="executor for the time estimate (default: the file's [executor] default)")
    plan.add_argument("--json", action="store_true", help="print the runs as JSON lines")
    plan.set_defaults(func=run_plan)

    la = sub.add_parser("launch", help="submit every run that is not complete (idempotent)")
    la.add_argument("file", type=Path, help="sweep file (TOML)")
    la.add_argument("--executor", choices=EXECUTORS,
                    help="local processes, a Slurm job array, or in-process (default: the file's [executor] default)")
    la.add_argument("--out", type=Path, help="sweep directory (default: the file's sweep.out, else runs/<name>)")
    la.add_argument("--dry-run", action="store_true", help="show what would be submitted; submit nothing")
    la.add_argument("--retry-failed", action="store_true", help="also resubmit failed and diverged runs")
    la.add_argument("--wait", action="store_true", help="Slurm: block until every run has finished")
    la.add_argument("--runs", metavar="PATTERN",
                    help="launch only these runs: comma-separated shell patterns over run names ('C1e18-*,N25M-*')")
    la.set_defaults(func=run_launch)

    st = sub.add_parser("status", help="state of every run of a sweep directory")
    st.add_argument("dir", type=Path, help="sweep directory")
    st.add_argument("--watch", nargs="?", const=5.0, type=float, metavar="SECONDS",
                    help="redraw every SECONDS (default 5) until nothing is pending or running")
    st.add_argument("--json", action="store_true", help="one JSON object per run")
    st.set_defaults(func=run_status)

    co = sub.add_parser("collect", help="write results.parquet and curves.parquet for the fits")
    co.add_argument("dir", type=Path, help="sweep directory")
    co.set_defaults(func=run_collect)

    ex = sub.add_parser("extend", help="write the runs that move edge budgets' sizes as a sweep file to launch",
                        description="Name every budget whose lowest loss is at an edge of its sizes and write "
                                    "the runs beyond that edge as a sweep file for the same sweep directory.")
    ex.add_argument("source", type=Path, metavar="SWEEP_DIR_OR_FIT",
                    help="sweep directory (after `sweep collect`) or a fit.json of its results")
    ex.add_argument("--out", type=Path, help="sweep file to write (default: SWEEP_DIR/extend.toml)")
    ex.set_defaults(func=run_extend)
    ca = sub.add_parser("cancel", help="stop every pending or running job of a sweep (runs stay resumable)")
    ca.add_argument("dir", type=Path, help="sweep directory")
    ca.set_defaults(func=run_cancel)
    lg = sub.add_parser("logs", help="print a run's current or last log (any executor)")
    lg.add_argument("dir", type=Path, help="sweep directory")
    lg.add_argument("run", help="run name (as `sweep status` shows it)")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing what it gains until its job ends")
    lg.add_argument("--err", action="store_true", help="the job's stderr (errors, tracebacks) instead of its stdout")
    lg.set_defaults(func=run_logs)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400 * 2:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s / 86400:.1f}d"


def plan_table(sweep, executor: str | None = None) -> str:
    from scaling.sweep.branches import trained_share
    from scaling.sweep.spec import format_budget
    from scaling.sweep.task_cost import task_flops

    res = sweep.resources
    fps = res.flops_per_s()
    rows = [("run", "N", "N non-emb", "D", "C (FLOPs)", "D/N", "batch", "procs", "steps", "lr", "est. time")
            + (("trains",) if sweep.branches else ())]
    gpus = any(r.placement for r in sweep.runs)
    if gpus:   # runs on GPUs: the memory plan's pick (scaling/sweep/placement.py)
        rows[0] += ("strategy", "micro", "state GB", "act GB (ckpt)", "GB/GPU")
    total_s = total_c = longest = 0.0
    for r in sweep.runs:
        own = sweep.resources_of(r)   # keys by size give runs resources of their own
        share = trained_share(r)      # a branch trains only its cooldown
        t = own.run_seconds(r.tokens * share, r.flops * share + task_flops(r.config, r.flops / r.tokens))   # + its tasks' scoring
        total_s += t
        longest = max(longest, t)
        total_c += r.flops * share
        rows.append((r.name, format_count(r.n_params), format_count(r.n_params_nonembed), format_count(r.tokens),
                     format_budget(r.flops), f"{r.tokens_per_param:.1f}", str(r.config.batch_size),
                     str(own.world), f"{r.tokens // r.config.tokens_per_step:,}",
                     _lr_cell(r), _hms(t)) + ((_branch_cell(r),) if sweep.branches else ())
                    + (_memory_cells(r) if gpus else ()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    kind = executor or res.default
    conc = res.concurrent()
    source = "set in [executor] achieved_flops" if res.achieved_flops else "assumed; set [executor] achieved_flops"
    cap = f", at most {res.max_tokens_per_s:.3g} tokens/s" if res.max_tokens_per_s else ""
    lines.append(
        f"{len(sweep.runs)} runs, {format_budget(total_c)} FLOPs {'to train' if sweep.branches else 'in all'}; "
        f"at {fps:.3g} FLOP/s per job"
        f"{f' of {res.world} processes' if res.world > 1 else ''} ({source}{cap}) "
        f"+ {res.overhead_s:.0f}s start-up each: {_hms(total_s)} of job time, about {_hms(max(longest, total_s / conc))} "
        f"wall with {conc} at a time ({kind})")
    lines.append(_weights_line(sweep.runs))
    if gpus:
        lines.append(_memory_line(sweep.runs))
    if sweep.branches:
        lines.append(_branched_line(sweep.runs))
    for note in sweep.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _memory_cells(r) -> tuple[str, ...]:
    """strategy, micro-batch per process, GB per GPU of the training state (weights, gradients,
    AdamW's moments, the strategy's copies) and of the micro-batch's activations without (and
    with) activation checkpointing, and the total (`ckpt` where the run checkpoints)."""
    if r.placement is None:
        return ("-",) * 5
    m = r.placement.choice.memory
    return (r.placement.label, str(m.micro_batch), f"{m.state / 1e9:.1f}",
            f"{m.activations / 1e9:.1f} ({m.activations_ckpt / 1e9:.1f})",
            f"{m.total / 1e9:.1f}" + (" ckpt" if m.checkpointing else ""))


def _memory_json(r) -> dict:
    """The memory plan of a run on GPUs, in bytes per GPU, part by part; nothing on CPUs."""
    if r.placement is None:
        return {}
    m = r.placement.choice.memory
    # The pick, not the config's: a one-GPU run keeps train.strategy = "auto" (nothing to write).
    return {"strategy": r.placement.choice.strategy, "gpus": m.world, "micro_batch": m.micro_batch,
            "gpu_mem_gb": r.placement.gpu_mem_gb,
            "memory_bytes": {"weights": m.weights, "gradients": m.gradients, "optimizer": m.optimizer,
                             "working": m.working, "activations": m.activations,
                             "activations_checkpointed": m.activations_ckpt, "total": m.total}}


def _memory_line(runs) -> str:
    """What the GB/GPU column counts, the GPU it was planned for, and what the plan changed."""
    placed = [r.placement for r in runs if r.placement]
    sizes = sorted({p.gpu_mem_gb for p in placed})
    gpu = " / ".join(f"{g:g}" for g in sizes) + " GB GPUs" + (
        " (assumed: an H100; set [executor] gpu_mem_gb)" if any(p.assumed for p in placed) else "")
    fsdp = [r for r in runs if r.placement and r.placement.choice.strategy == "fsdp"]
    picked = all(r.placement.choice.why for r in fsdp)   # the plan chose FSDP, not the file
    sharded = (f"{len(fsdp)} run(s) sharded with FSDP, from {format_count(min(r.n_params for r in fsdp))}"
               + (f": DDP does not fit them, or fits under {DDP_MIN_MICRO} sequences a micro-batch" if picked else "") if fsdp else "no run sharded")
    return (f"memory per GPU, planned for {gpu}: fp32 weights, gradients and AdamW's two moments, the strategy's "
            f"copies and one micro-batch's activations (docs/sweeps.md, \"Memory per GPU\"); {sharded}")


def _branch_cell(r) -> str:
    """What a run of a branched sweep trains: all its steps (a trunk), or its cooldown from its
    trunk's checkpoint."""
    return f"cooldown from {r.trunk} @ step {r.branch_step:,}" if r.trunk else "trunk: every step"


def _branched_line(runs) -> str:
    """A branched sweep's compute against the same points from scratch (sweep/branches.py)."""
    from scaling.sweep.branches import branched_compute
    from scaling.sweep.spec import format_budget

    c = branched_compute(runs)
    return (f"branched: {format_budget(c.branched)} FLOPs to train ({c.trunks} trunk(s), {c.branches} branch(es) "
            f"that train only their cooldown) against {format_budget(c.scratch)} FLOPs for the same points from "
            f"scratch: {c.saved:.0%} less")


def _weights_line(runs) -> str:
    """The disk the sweep's kept models take (rundir.weight_bytes: fp32), or that none are kept."""
    kept = [r for r in runs if r.config.keep_weights]
    if not kept:
        return "weights: none kept (keep_weights = false)"
    total = sum(weight_bytes(r.n_params) for r in kept)
    some = f" of {len(kept)} of the {len(runs)} runs" if len(kept) < len(runs) else f" of the {len(runs)} runs"
    return (f"weights: {_bytes(total)} on disk for the final models{some} (fp32, 4 bytes a parameter; "
            f"keep_weights = false in [train] keeps none)")


def _bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _lr_cell(r) -> str:
    """Which lr a run gets and where it came from (the batch's source too, when derived)."""
    src = dict(r.sources)
    lr = "rule of N" if r.config.lr is None else f"{r.config.lr:.3g} ({src.get('lr', 'set')})"
    return lr + (f"; batch {src['batch_size']}" if "batch_size" in src else "")


def run_plan(args) -> int:
    from scaling.sweep.advice import plan_warnings
    from scaling.sweep.spec import load_sweep

    sweep = load_sweep(args.file)
    if args.json:
        for r in sweep.runs:
            print(json.dumps({"run": r.name, "params": r.config.params, "n_params": r.n_params,
                              "n_params_nonembed": r.n_params_nonembed, "tokens": r.tokens, "flops": r.flops,
                              "budget": r.budget, "tokens_per_param": r.tokens_per_param,
                              "lr": r.config.lr, "batch_size": r.config.batch_size, "sources": dict(r.sources),
                              "schedule": r.config.schedule, "trunk": r.trunk, "branch_step": r.branch_step,
                              "weight_bytes": weight_bytes(r.n_params) if r.config.keep_weights else 0,
                              **_memory_json(r)}))
    else:
        print(plan_table(sweep, args.executor))
    # On stderr, after the table: the table (or JSON) on stdout stays what scripts read.
    for w in plan_warnings(sweep):
        print(f"warning: {w}", file=sys.stderr)
    return 0


def run_launch(args) -> int:
    from scaling.sweep.advice import repeat_warning
    from scaling.sweep.launch import LaunchInterrupted, launch
    from scaling.sweep.spec import load_sweep
    from scaling.sweep.status import summary, sweep_states

    sweep = load_sweep(args.file)
    for w in [*sweep.warnings, repeat_warning(sweep)]:   # paths read as before; data seen more than once
        if w:
            print(f"warning: {w}", file=sys.stderr)
    try:
        res = launch(sweep, executor=args.executor, out=args.out, dry_run=args.dry_run,
                     retry_failed=args.retry_failed, wait=args.wait, progress=sys.stderr.isatty(), runs=args.runs,
                     lines=not sys.stderr.isatty())
    except LaunchInterrupted as e:   # Ctrl-C or SIGTERM: one line, the runs checkpointed
        again = f"scaling sweep launch {args.file}" + (f" --out {args.out}" if args.out else "")
        print(f"{e.line()}: {again}", file=sys.stderr)
        return e.exit_code
    if args.dry_run:
        for runs, text in res.scripts:   # as sbatch --test-only accepted them
            print(f"# sbatch script for {len(runs)} run(s), each task then named <sweep>/<run>: {', '.join(runs)}\n{text}")
        for name in res.submitted:
            print(f"would submit {name}")
        print(f"dry run ({res.executor}) into {res.dir}: {res.describe().replace('submitted', 'to submit')}")
        return 0
    arrays = sorted({j.split("_")[0] for j in res.job_ids.values()}, key=int) if res.executor == "slurm" else []
    where = f" (job array{'s' if len(arrays) > 1 else ''} {', '.join(arrays)})" if arrays else ""
    print(f"{res.dir}: {res.describe()}{where}")
    logs = {s.name: s.log_err for s in sweep_states(res.dir)} if res.errors else {}
    for name, err in res.errors.items():
        print(f"failed {name}: {err}" + (f" (log: {logs[name]})" if logs.get(name) else ""), file=sys.stderr)
    if res.executor == "slurm" and res.submitted and not args.wait:
        print(f"watch with: scaling sweep status {res.dir} --watch")
    if res.executor != "slurm" or args.wait:
        print(summary(sweep_states(res.dir)))
    return 1 if res.errors else 0


def run_status(args) -> int:
    from scaling.sweep.status import summary, sweep_states, table, watch

    if args.watch is not None:
        states = watch(args.dir, args.watch)
        return 0
    states = sweep_states(args.dir)
    if args.json:
        for s in states:
            print(json.dumps(s.to_dict()))
        return _damaged(states)
    import shutil

    print(table(states, shutil.get_terminal_size().columns if sys.stdout.isatty() else None))
    print(summary(states))
    return _damaged(states)


def _damaged(states, problems=()) -> int:
    """Damaged files of single runs (a corrupt run.json, an unreadable metrics table): one
    `error:` line each, with its path, after every other run has been reported; exit 2."""
    lines = [s.error for s in states if s.state == "corrupt"] + list(problems)
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return 2 if lines else 0


def run_collect(args) -> int:
    from scaling.sweep.collect import CURVES, RESULTS, collect
    from scaling.sweep.status import summary

    problems: list[str] = []
    results, curves, states = collect(args.dir, problems)
    incomplete = [s for s in states if s.state != "completed"]
    print(f"{args.dir / RESULTS}: {results.height} runs ({results.height - len(incomplete)} completed)")
    print(f"{args.dir / CURVES}: {curves.height} validation points")
    if incomplete:
        print("not in the fits (not completed): " + ", ".join(f"{s.name} ({s.state})" for s in incomplete))
    print(summary(states))
    return _damaged(states, problems)


def run_extend(args) -> int:
    # The fit (numpy, polars) loads here, not at the top: the other sweep commands start without it.
    from scaling.fit.edges import Edge, edges_of_table
    from scaling.fit.report import read_fit_file
    from scaling.fit.table import load_runs
    from scaling.sweep.collect import RESULTS
    from scaling.sweep.extend import extend
    from scaling.sweep.spec import format_budget

    src = args.source
    if src.is_file():
        record = read_fit_file(src)
        results = Path(str(record.get("source", "")))
        if not results.is_file():
            raise UserError(f"{src}: its results table {results} is not here; give the sweep directory instead")
        edges = ([Edge.from_dict(e) for e in record["edges"]] if "edges" in record
                 else edges_of_table(load_runs(results)))
    elif src.is_dir():
        results = src / RESULTS
        if not results.is_file():
            raise UserError(f"{src}: no {RESULTS} (write it with `scaling sweep collect {src}`)")
        edges = edges_of_table(load_runs(results))
    else:
        raise UserError(f"{src}: no such sweep directory or fit file")
    if not edges:
        print(f"{results}: every budget's lowest loss is inside its sizes; nothing to add")
        return 0
    for e in edges:
        print(e.line())
    ext = extend(results.parent, edges, args.out)
    for budget, runs in ext.added.items():
        print(f"budget {format_budget(budget)}: adds " + ", ".join(f"{name} (N {format_count(n)})" for _, n, name in runs))
    for note in ext.notes:
        print(f"note: {note}")
    print(f"wrote {ext.path}: {ext.runs} new runs for {len(ext.added)} budget(s) of {ext.dir}; launch them with\n"
          f"  scaling sweep launch {ext.path}\n"
          f"then `scaling sweep collect {ext.dir}` and `scaling fit {ext.dir / RESULTS}` over old and new runs")
    return 0


def run_logs(args) -> int:
    from scaling.sweep.logs import find_log, show

    return show(find_log(args.dir, args.run, err=args.err), follow=args.follow)


def run_cancel(args) -> int:
    from scaling.sweep.cancel import cancel
    from scaling.sweep.status import summary, sweep_states

    res = cancel(args.dir)
    print(res.describe())
    print(summary(sweep_states(args.dir)))
    return 0
