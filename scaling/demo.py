"""`make demo`: the whole data flow on a laptop, in about ten minutes on two cores.

corpus -> token shards -> an IsoFLOP sweep of the lab's own encoder-decoders (local
processes) -> results table -> Chinchilla's three approaches with bootstrap intervals and a
held-out budget -> the 20B / 1T plan under the demo's own law and under the default law ->
one HTML report of it all.
Every step is the CLI a user would type; rerunning skips what is done.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from scaling.cli import main as cli

SWEEP = "sweeps/demo-cpu.toml"
OUT = "runs/demo-cpu"
DATA = "data/shards/default-bytes"
# Kaplan's non-embedding N: at 10K-500K parameters the embeddings are a large share of a
# model and bend the small end of the law (both counts are in results.parquet; see README).
N_COLUMN = "params=params_nonembed"


def steps(sweep: str = SWEEP, out: str = OUT, data: str | None = DATA, bootstrap: int = 200) -> list:
    """(title, argv) of each step. data=None: the sweep's data exists already (tests)."""
    fit = f"{out}/fit.json"
    prepare = [("token shards of the embedded corpus (bytes tokenizer)",
                ["prepare", "--corpus", "default", "--tokenizer", "bytes", "--out", data])] if data else []
    return prepare + [
        ("the sweep's runs (nothing launched yet)", ["sweep", "plan", sweep]),
        ("training every run (2 local processes at a time; a rerun resumes)",
         ["sweep", "launch", sweep, "--executor", "local", "--out", out]),
        ("state of the sweep", ["sweep", "status", out]),
        ("results table", ["sweep", "collect", out]),
        (f"fits: Chinchilla's approaches 1-3, {bootstrap} bootstrap resamples, the largest budget held out, "
         "and the rollout (fit on the smallest k budgets, predict the rest)",
         ["fit", f"{out}/results.parquet", "--columns", N_COLUMN, "--bootstrap", str(bootstrap), "--rollout", "--out", fit,
          "--plots", f"{out}/plots"]),
        ("plan under the demo's own law: AlexaTM's 20B parameters on 1T tokens",
         ["plan", "--fit", fit, "--params", "20B", "--tokens", "1T", "--out", f"{out}/plan-own.json"]),
        ("the same plan under the default law (Chinchilla's 240 runs refitted), with the famous models",
         ["plan", "--params", "20B", "--tokens", "1T", "--inference-tokens", "1T", "--compare",
          "--plots", f"{out}/plots"]),
        ("the report: runs, fits, held-out check, the plan and its bill, every figure, in one offline HTML file",
         ["report", out, "--out", report_path(out), "--plan", *PLAN_ARGS]),
    ]


PLAN_ARGS = ["--params", "20B", "--tokens", "1T", "--inference-tokens", "1T"]


def report_path(out: str) -> str:
    return f"{out}/report.html"


def _disagreement(fit: dict) -> list[str]:
    """A line on why the approaches' exponents differ, when they do by more than 0.1."""
    a = {k: fit[f"approach{k}"]["a"] for k in (1, 2, 3) if fit.get(f"approach{k}")}
    if len(a) < 2 or max(a.values()) - min(a.values()) <= 0.1:
        return []
    mid = sorted(a.values())[len(a) // 2]
    k = max(a, key=lambda j: abs(a[j] - mid))
    why = {1: "approach 1 reads the runs' loss curves, whose early points lie before the decoder learns "
              "to copy its input (the 0.5-1 nat transition of the denoising task); approaches 2 and 3 read "
              "the final points, past it",
           2: "approach 2 rests on each budget's few sizes around its minimum",
           3: "approach 3 fits one law to every run, including those far from each budget's optimum"}[k]
    others = ", ".join(f"{a[j]:.3f}" for j in sorted(a) if j != k)
    return [f"  the approaches differ: approach {k}'s a = {a[k]:.3f} against {others}; {why}"]


def task_table(results_path: str) -> str:
    """Each completed run's task scores at its last validation point (docs/tasks.md): the
    bits per byte of each task's answers, and multiple-choice accuracy against chance."""
    import polars as pl

    p = Path(results_path)
    if not p.exists():
        return ""
    df = pl.read_parquet(p).filter(pl.col("status") == "completed")
    names = sorted({c.split(".")[1] for c in df.columns if c.startswith("task.")})
    cols = [f"task.{n}.{k}" for n in names for k in ("bpb", "acc") if f"task.{n}.{k}" in df.columns]
    if not cols or df.is_empty():
        return ""
    df = df.sort("budget", "params")
    head = ["run", "loss", *(c.removeprefix("task.") for c in cols)]
    rows = [[r["run"], f"{r['loss']:.3f}", *("-" if r[c] is None else f"{r[c]:.3f}" for c in cols)]
            for r in df.iter_rows(named=True)]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join(["Task scores per run (last validation point; bpb of the answer, accuracy of 4 choices, "
                      "chance 0.25):", *(fmt(r) for r in [head, *rows])])


def summary(fit_path: str, plan_path: str) -> str:
    """What the demo recovered, in a few lines: exponents, held-out error, reach."""
    fit = json.loads(Path(fit_path).read_text())
    lines = [f"What the demo recovered ({fit['n_runs']} runs, N = {fit['params_column']}):"]
    budgets = (fit.get("approach2") or {}).get("budgets") or []
    if budgets:
        refused = [f"{b['flops']:.3g}" for b in budgets if b.get("refused")]
        lines.append(f"  IsoFLOP profiles with an interior minimum: {len(budgets) - len(refused)} of {len(budgets)} budgets"
                     + (f" (none at {', '.join(refused)} FLOPs)" if refused else ""))
    for k in (1, 2, 3):
        r = fit.get(f"approach{k}")
        if r:
            lo, hi = r["ci"]["a"]
            ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
            lines.append(f"  approach {k}: a = {r['a']:.3f}{ci}")
        else:
            lines.append(f"  approach {k}: not fitted")
    lines += _disagreement(fit)
    a3 = fit.get("approach3")
    if a3:
        ci = a3["ci"]
        band = (f"   (alpha {ci['alpha'][0]:.3f}-{ci['alpha'][1]:.3f}, beta {ci['beta'][0]:.3f}-{ci['beta'][1]:.3f})"
                if ci["alpha"][0] is not None and ci["beta"][0] is not None else "   (no intervals)")
        lines.append("  law: L = {E:.4g} + {A:.4g}/N^{alpha:.3f} + {B:.4g}/D^{beta:.3f}".format(**a3) + band)
        if a3.get("degenerate"):
            lines.append(f"  the law is degenerate on these runs: {a3['degenerate']}; "
                         f"{a3.get('bootstrap_degenerate', 0)} of {fit['bootstrap']} bootstrap fits too")
    hb = fit.get("holdout_budget")
    if hb and hb.get("approach3"):
        lines.append(f"  held out {hb['budget']:.3g} FLOPs ({hb['extrapolation']:.1f}x the largest fitted budget): "
                     f"loss predicted to {100 * hb['approach3']['mean_abs_rel_error']:.2f}% on average, "
                     f"max {100 * hb['approach3']['max_abs_rel_error']:.2f}%")
    ro = fit.get("rollout")
    if ro and ro["by_factor"]:
        parts = [f"~{b['factor']:g}x {100 * b['approach3']:.1f}%" for b in ro["by_factor"] if "approach3" in b]
        if parts:
            lines.append("  rollout, approach 3's median loss error by extrapolation factor: " + ", ".join(parts))
    p = Path(plan_path)
    if p.exists():
        reach = json.loads(p.read_text()).get("reach") or {}
        if reach:
            lines.append(f"  the 20B plan extrapolates this law {reach['params_factor']:.3g}x in N and "
                         f"{reach['flops_factor']:.3g}x in compute: a law of the objective at laptop scale, "
                         "not a forecast for 20B")
    return "\n".join(lines)


def main(sweep: str = SWEEP, out: str = OUT, data: str | None = DATA, bootstrap: int = 200) -> int:
    t0 = time.time()
    todo = steps(sweep, out, data, bootstrap)
    for i, (title, argv) in enumerate(todo, 1):
        print(f"\n== {i}/{len(todo)} {title}\n$ scaling {' '.join(argv)}", flush=True)
        if argv[0] == "prepare" and Path(argv[-1], "meta.json").exists():
            print(f"{argv[-1]} already holds shards; kept (delete it to rebuild)")
            continue
        rc = cli(argv)
        if rc not in (0, None):
            print(f"demo: step {i} exited {rc}", file=sys.stderr)
            return rc
    tasks = task_table(f"{out}/results.parquet")
    if tasks:
        print("\n" + tasks)
    print("\n" + summary(f"{out}/fit.json", f"{out}/plan-own.json"))
    print(f"\nDemo finished in {time.time() - t0:.0f} s. Report: {report_path(out)} (open it in a browser; "
          f"it works offline). Figures alone: {out}/plots/*.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
