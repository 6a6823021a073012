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

from scaling.base.config import read_toml
from scaling.cli import main as cli
from scaling.data.tasks import BUILTIN_NAMES, NEXTSENT_CHOICES

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
    ] + task_steps(sweep, out, bootstrap)


def demo_tasks(sweep: str) -> list[str]:
    """The built-in tasks the sweep's runs score ([eval] tasks): the demo fits a task law to each."""
    doc = read_toml(sweep, "sweep file")
    return [t for t in (doc.get("eval") or {}).get("tasks", []) if t in BUILTIN_NAMES]


def task_steps(sweep: str, out: str, bootstrap: int) -> list:
    """The two-step task law of each built-in task (docs/task-laws.md), on the answers' bits per
    byte in the CLM form ([CLM] + prompt in the encoder, the answer from the decoder): at this
    scale the denoising form's answer loss does not fall with compute (docs/tasks.md), so it has
    no law to fit. Step 2 is tried on the multiple-choice task, against its chance level."""
    todo = []
    for name in demo_tasks(sweep):
        fit = f"{out}/fit-{name}.json"
        acc = ["--accuracy", f"task.{name}.acc_clm", "--chance", f"{1 / NEXTSENT_CHOICES:g}"] if name == "nextsent" else []
        todo += [(f"task law of {name}: step 1, its answers' bpb as L(N, D); step 2, accuracy against it "
                  "(or why not at this scale)",
                  ["fit", f"{out}/results.parquet", "--columns", N_COLUMN, "--target", f"task.{name}.bpb_clm", *acc,
                   "--bootstrap", str(bootstrap), "--no-holdout", "--out", fit]),
                 (f"the 20B / 1T plan's predicted {name} task loss under that law",
                  ["plan", "--fit", fit, "--params", "20B", "--tokens", "1T", "--out", f"{out}/plan-{name}.json"])]
    return todo


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
    cols = [f"task.{n}.{k}" for n in names for k in ("bpb", "bpb_clm", "acc", "acc_clm") if f"task.{n}.{k}" in df.columns]
    if not cols or df.is_empty():
        return ""
    df = df.sort("budget", "params")
    head = ["run", "loss", *(c.removeprefix("task.") for c in cols)]
    rows = [[r["run"], f"{r['loss']:.3f}", *("-" if r[c] is None else f"{r[c]:.3f}" for c in cols)]
            for r in df.iter_rows(named=True)]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join(["Task scores per run (last validation point; bpb of the answer, accuracy of 4 choices, "
                      "chance 0.25; _clm: the CLM form, docs/tasks.md):", *(fmt(r) for r in [head, *rows])])


def degenerate(fit_path) -> str | None:
    """Why a task law (fit-<task>.json) cannot carry a plan: its step-1 law is degenerate (a term
    vanished, an exponent left (0, 3)), as tiny or too few runs give; None when it can."""
    a3 = json.loads(Path(fit_path).read_text()).get("approach3") or {}
    return a3.get("degenerate") or (None if a3 else "no approach 3 law")


def unplannable(argv: list[str]) -> str | None:
    """A task plan step whose law is degenerate is skipped with the reason, not run into an
    error: the demo goes on to its summary, which says so."""
    if argv[0] != "plan" or "--fit" not in argv:
        return None
    fit = argv[argv.index("--fit") + 1]
    why = Path(fit).name.startswith("fit-") and degenerate(fit)
    return f"{fit}: step 1's law is degenerate on these runs ({why}); no plan from it" if why else None


def task_summary(out: str, names: list[str]) -> str:
    """Per built-in task: each budget's lowest task loss, the two-step law (or why a step was
    not fitted at this scale) and the 20B / 1T plan's predicted task loss."""
    import polars as pl

    res = Path(out, "results.parquet")
    if not names or not res.exists():
        return ""
    df = pl.read_parquet(res).filter(pl.col("status") == "completed")
    lines = []
    for name in names:
        col, fit_p, plan_p = f"task.{name}.bpb_clm", Path(out, f"fit-{name}.json"), Path(out, f"plan-{name}.json")
        if col not in df.columns or not fit_p.exists():
            continue
        best = df.filter(pl.col(col).is_not_null()).group_by("budget").agg(pl.col(col).min()).sort("budget")
        lines.append(f"Task {name} ({col}, bits per byte of the answer):")
        lines.append("  lowest per budget: " + ", ".join(f"{b:.3g} FLOPs {v:.3f}" for b, v in best.iter_rows()))
        t = json.loads(fit_p.read_text())["task"]
        s1, s2 = t["step1"], t["step2"]
        lines.append("  step 1: L = {E:.4g} + {A:.4g}/N^{alpha:.3f} + {B:.4g}/D^{beta:.3f}".format(**s1)
                     + f" on {s1['n_runs']} runs")
        lines.append(f"  step 2: not fitted: {s2['refused']}" if "refused" in s2 else
                     f"  step 2: accuracy from {s2['floor']:.3f} to {s2['ceiling']:.3f} around task loss {s2['L0']:.3f}"
                     f" ({s2['n_points']} points)")
        why = degenerate(fit_p)
        if why:
            lines.append(f"  the 20B / 1T plan: not predicted: step 1's law is degenerate at this scale ({why})")
        elif plan_p.exists():
            p = json.loads(plan_p.read_text()).get("task") or {}
            ci = p.get("task_loss_ci") or [None, None]
            band = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else ""
            acc = (f", accuracy {p['accuracy']:.3f}" if p.get("accuracy") is not None else
                   ", accuracy not predicted (no step 2)")
            lines.append(f"  the 20B / 1T plan: task loss {p['task_loss']:.3f}{band}{acc}")
    return "\n".join(lines)


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
        why = unplannable(argv)
        if why:
            print(f"skipped: {why}")
            continue
        rc = cli(argv)
        if rc not in (0, None):
            print(f"demo: step {i} exited {rc}", file=sys.stderr)
            return rc
    tasks = task_table(f"{out}/results.parquet")
    if tasks:
        print("\n" + tasks)
    laws = task_summary(out, demo_tasks(sweep))
    if laws:
        print("\n" + laws)
    print("\n" + summary(f"{out}/fit.json", f"{out}/plan-own.json"))
    print(f"\nDemo finished in {time.time() - t0:.0f} s. Report: {report_path(out)} (open it in a browser; "
          f"it works offline). Figures alone: {out}/plots/*.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
