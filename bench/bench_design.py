"""`scaling design` on Chinchilla's 240 points, where every candidate's loss is known. Prints
the table of docs/design.md; asserts nothing.

    .venv/bin/python bench/bench_design.py [--share 0.25] [--seeds 20] [--rounds 4,16] [--noise-seeds 5] [--json FILE]

Every method starts from the same runs (the cheapest, up to 0.5% of the compute and at least
16) and spends up to the same share of the points' compute in all:

- design: `scaling.fit.design.replay` (choose by the interval of the plan's loss at the largest
  compute, refit, choose again; each of `--rounds` rounds);
- random: the points in a random order, each taken while it fits the allowance (`--seeds` orders);
- grid: every k-th point in order of compute (an even spread over the compute range; the
  offset that spends most), k the smallest stride that fits, the rest filled the same way.

Judged by the law each subset fits: its predicted loss at the compute-optimal point of the
largest compute (C_max = 1.26e22), against the full 240 points' fit, and its mean error on the
points within 10x of C_max (a synthetic copy, below: against the law it was drawn from). Two settings: `all`, every point a candidate; `held-out`, the
points within 10x of C_max are not candidates (the law is judged by 10x+ extrapolation), and
the allowance is the share of the remaining points' compute. A row `every candidate` fits them
all (100% of their compute): the best a subset could hope to match.

Then the same on a synthetic copy (`--noise-seeds` of them): the same 240 (N, D), their losses
drawn from the full fit's law times exp(0.5% noise), the residual scatter of the real points,
so that the law holds exactly and only the choice of runs differs (median over the copies).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import polars as pl

from scaling.base.flops import SIX_ND
from scaling.fit.compute import optimal
from scaling.fit.design import replay
from scaling.fit.law import LawData, fit_law_vp, predict_loss

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla-epoch" / "svg_extracted_data.csv"
PORIAN = Path(__file__).resolve().parents[1] / "tests" / "data" / "porian_isoflop.csv"
START_SHARE = 0.005
START_RUNS = 16


def points():
    df = pl.read_csv(DATA).sort("loss").head(240)   # the replication's 240: the 5 highest-loss dropped
    n = df["Model Size"].to_numpy().astype(float)
    c = df["Training FLOP"].to_numpy().astype(float)
    return n, c / (6 * n), df["loss"].to_numpy().astype(float), c


def fill(order, c, used, allowance):
    """Take the points of `order` not yet used, each while it still fits the allowance."""
    used = used.copy()
    left = allowance - c[used].sum()
    for i in order:
        if not used[i] and c[i] <= left:
            used[i] = True
            left -= c[i]
    return used


def grid(cand, c, start, allowance):
    """Every k-th candidate in order of compute, k and offset spending most within the allowance."""
    order = cand[np.argsort(c[cand])]
    best = None
    for k in range(1, len(order) + 1):
        for off in range(k):
            used = start.copy()
            used[order[off::k]] = True
            if c[used].sum() <= allowance and (best is None or c[used].sum() > c[best].sum()):
                best = used
        if best is not None:
            break
    return fill(order, c, best, allowance)


def judge(n, d, loss, c, used, ref_opt, top, ref_top):
    p = fit_law_vp(LawData.from_arrays(n[used], d[used], loss[used])).params
    pred_opt = float(optimal(p, c.max(), SIX_ND)[2])
    err_top = float(np.mean(np.abs(predict_loss(p, n[top], d[top]) / ref_top - 1)))
    return abs(pred_opt / ref_opt - 1), err_top, p


def setting(name, n, d, loss, c, cand_mask, share, seeds, rounds, ref_opt, top, ref_top):
    """The rows of one setting: every method's subsets, judged."""
    cand = np.flatnonzero(cand_mask)
    allowance = share * c[cand].sum()
    order = cand[np.argsort(c[cand])]
    start = np.zeros(len(n), bool)
    # The cheapest runs, up to START_SHARE of the compute and at least START_RUNS of them (an
    # IsoFLOP sweep's smallest budget alone cannot separate N from D).
    start[order[(np.cumsum(c[order]) <= START_SHARE * c[cand].sum()) | (np.arange(len(order)) < START_RUNS)]] = True
    rows = [("every candidate", [cand_mask], None)]
    for k in rounds:
        t = time.time()
        used = np.zeros(len(n), bool)
        # Candidates outside cand_mask are never offered: replay sees only the candidates' table.
        sub = replay(n[cand], d[cand], loss[cand], c[cand], np.flatnonzero(start[cand]), allowance,
                     rounds=k, plan_compute=float(c.max()), count=SIX_ND)
        used[cand[sub]] = True
        rows.append((f"design, {k} rounds", [used], time.time() - t))
    rng = np.random.default_rng(0)
    rows.append(("random", [fill(rng.permutation(cand), c, start, allowance) for _ in range(seeds)], None))
    rows.append(("grid", [grid(cand, c, start, allowance)], None))
    out = []
    for method, subsets, secs in rows:
        errs = np.array([judge(n, d, loss, c, u, ref_opt, top, ref_top)[:2] for u in subsets])
        out.append({"setting": name, "method": method, "subsets": len(subsets),
                    "runs": float(np.mean([u.sum() for u in subsets])),
                    "share": float(np.mean([c[u].sum() for u in subsets]) / c[cand].sum()),
                    "largest_run": float(np.median([c[u].max() for u in subsets])),
                    "err_opt_median": float(np.median(errs[:, 0])), "err_opt_worst": float(errs[:, 0].max()),
                    "err_top_median": float(np.median(errs[:, 1])), "err_top_worst": float(errs[:, 1].max()),
                    "seconds": secs})
    return out


def porian(args, rounds) -> list:
    """The same protocol on each of Porian et al.'s sweeps (real points only)."""
    df = pl.read_csv(PORIAN, comment_prefix="#")
    rows = []
    for name in sorted(set(df["set"])):
        s = df.filter(pl.col("set") == name)
        n, d, ls, c = (s[k].to_numpy().astype(float) for k in ("params", "tokens", "loss", "budget"))
        top = c >= c.max() / 10
        law = fit_law_vp(LawData.from_arrays(n, d, ls)).params
        ref_opt = float(optimal(law, c.max(), SIX_ND)[2])
        part = []
        for setting_name, mask in (("all", np.ones(len(n), bool)), ("held-out", ~top)):
            part += [{"data": name, **r} for r in setting(setting_name, n, d, ls, c, mask, args.share, args.seeds,
                                                           rounds, ref_opt, top, ls[top])]
        print(table(part, f"Porian et al.'s {name} sweep: {len(n)} runs, {top.sum()} within 10x of C_max {c.max():.3g}"))
        rows += part
    return rows


def table(rows, title) -> str:
    lines = [f"\n{title}\n", "| setting | method | subsets | runs | compute share | largest run | L_opt(C_max) error vs "
             "full fit, median (worst) | mean error on the points within 10x of C_max, median (worst) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['method']} | {r['subsets']} | {r['runs']:.0f} | {r['share']:.1%} | "
                     f"{r['largest_run']:.2g} | {100 * r['err_opt_median']:.2f}% ({100 * r['err_opt_worst']:.2f}%) | "
                     f"{100 * r['err_top_median']:.2f}% ({100 * r['err_top_worst']:.2f}%) |")
    return "\n".join(lines)


def _median_over_copies(rows):
    """One row per (setting, method): each figure the median over the synthetic copies, worst the worst."""
    out = []
    for key in dict.fromkeys((r["setting"], r["method"]) for r in rows):
        group = [r for r in rows if (r["setting"], r["method"]) == key]
        m = {k: float(np.median([r[k] for r in group])) for k in ("runs", "share", "largest_run", "err_opt_median",
                                                                  "err_top_median")}
        out.append({**group[0], **m, "err_opt_worst": max(r["err_opt_worst"] for r in group),
                    "err_top_worst": max(r["err_top_worst"] for r in group)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--share", type=float, default=0.25, help="compute allowance, share of the candidates' (0.25)")
    ap.add_argument("--seeds", type=int, default=20, help="random subsets per setting (20)")
    ap.add_argument("--rounds", default="4,16", help="design rounds, a refit after each: a comma list (4,16)")
    ap.add_argument("--noise-seeds", type=int, default=5, help="synthetic copies of the points (5; 0: none)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    ap.add_argument("--porian", action="store_true",
                    help="also Porian et al.'s four IsoFLOP sweeps (tests/data/porian_isoflop.csv; C = their budget)")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent (Chinchilla's digitised points, ../shared/data/chinchilla-epoch/)")
        return 0
    rounds = [int(k) for k in args.rounds.split(",")]
    n, d, loss, c = points()
    ref = fit_law_vp(LawData.from_arrays(n, d, loss)).params
    top = c >= c.max() / 10
    print(f"Chinchilla's 240 points; {top.sum()} points within 10x of C_max {c.max():.3g}; allowance {args.share:.0%} "
          f"of the candidates' compute; {os.cpu_count()} CPUs, {platform.machine()}, load {os.getloadavg()[0]:.2f}")
    t = time.time()
    rows = []
    copies = [("Chinchilla", loss)]
    rng = np.random.default_rng(1)
    copies += [(f"synthetic {k}", predict_loss(ref, n, d) * np.exp(0.005 * rng.standard_normal(len(n))))
               for k in range(args.noise_seeds)]
    for data, ls in copies:
        # The real points are judged against their full fit and their own losses; a synthetic
        # copy against the law it was drawn from (its noise-free losses).
        law = fit_law_vp(LawData.from_arrays(n, d, ls)).params if data == "Chinchilla" else ref
        ref_opt = float(optimal(law, c.max(), SIX_ND)[2])
        ref_top = ls[top] if data == "Chinchilla" else predict_loss(ref, n[top], d[top])
        for name, mask in (("all", np.ones(len(n), bool)), ("held-out", ~top)):
            for r in setting(name, n, d, ls, c, mask, args.share, args.seeds, rounds, ref_opt, top, ref_top):
                rows.append({"data": data, **r})
    print(table([r for r in rows if r["data"] == "Chinchilla"], "Chinchilla's points"))
    if args.noise_seeds:
        print(table(_median_over_copies([r for r in rows if r["data"] != "Chinchilla"]),
                    f"synthetic copies (the full fit's law, 0.5% noise), median over {args.noise_seeds} copies; errors "
                    "against that law (its L_opt, its noise-free losses)"))
    if args.porian:
        rows += porian(args, rounds)
    secs = [r["seconds"] for r in rows if r["seconds"] is not None]
    print(f"\ndesign: {sum(secs):.1f} s in all ({len(secs)} designs, fits included); the benchmark {time.time() - t:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load": os.getloadavg()[0]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
