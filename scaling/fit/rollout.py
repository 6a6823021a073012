"""Rollout (leave-future-out): how far does a law fitted on small budgets hold?

Order the FLOP budgets (for a grid without a budget column, the runs' compute rounded to
0.1 dex, as Approach 2 groups them). For each k, fit on the k smallest budgets and predict
every larger one: Approach 3's relative error on those runs' losses, and Approach 2's N_opt
against the vertex of that budget's own profile, each against the extrapolation factor in
compute (the predicted budget over the largest budget fitted). Marin's and OLMo-core's
ladders check their forecasts this way (see the README, "Fitting past the data").

With parameters held fixed (`--fix E=...`), each step is fitted twice, free and fixed, so the
table shows what fixing the asymptote does to the forecast.
"""

from __future__ import annotations

import math

import numpy as np

from scaling.fit import isoflop, law


def factor_bucket(f: float) -> float:
    """1, 3, 10, 30, ...: the nearest half-decade, for the by-factor summary."""
    k = round(2 * math.log10(max(f, 1.0)))
    return 10 ** (k // 2) * (3 if k % 2 else 1)


MAX_CUTS = 12       # more budgets than this (a grid's compute in 0.1-dex groups): cut every half-decade


def cut_points(sorted_values: np.ndarray) -> list[int]:
    """Which k (fit on the k smallest budgets) to try: every k for a ladder of up to MAX_CUTS
    budgets; beyond that, a cut each time the largest fitted budget grows by half a decade."""
    k_all = list(range(1, len(sorted_values)))
    if len(sorted_values) <= MAX_CUTS:
        return k_all
    cuts, last = [], -np.inf
    for k in k_all:
        lv = math.log10(sorted_values[k - 1])
        if lv >= last + 0.5:
            cuts.append(k)
            last = lv
    return cuts


def _a3_errors(params: dict, n, d, loss) -> dict:
    pred = law.predict_loss(params, n, d)
    rel = (pred - loss) / loss
    return {"mean_abs_rel_error": float(np.mean(np.abs(rel))), "max_abs_rel_error": float(np.max(np.abs(rel))),
            "bias": float(np.mean(rel))}


def rollout(n, d, c, loss, budget=None, *, approaches=(2, 3), fixed: dict | None = None,
            refine: int | None = 256, method: str = "vp", profile: str = "local") -> dict:
    """Leave-future-out over the budgets of runs (n, d, c, loss; `budget` per run, or None to
    group the runs' compute by 0.1 dex): for each cut k (`cut_points`), approaches 3 and 2 fitted
    on the k smallest budgets predict every larger one. Returns {n_budgets, budgets, fixed,
    steps (one per fitted k and budget predicted: Approach 3's loss errors, free and with
    `fixed` held, and Approach 2's N_opt against the budget's own profile), by_factor (the
    median errors per extrapolation factor, `summarize`), skipped (the k each approach could
    not be fitted at)}: the record's `rollout` (`scaling fit --rollout`, `Fit.rollout()`)."""
    n, d, c, loss = (np.asarray(v, float) for v in (n, d, c, loss))
    labels, values = isoflop.group_budgets(c, budget)
    order = np.argsort(values)
    full_profiles = None
    if 2 in approaches:
        full_profiles = [isoflop.profile(values[g], n[labels == g], d[labels == g], loss[labels == g], c[labels == g],
                                         profile)
                         for g in range(len(values))]
    steps, skipped = [], {"approach2": [], "approach3": []}
    for k in cut_points(values[order]):
        seen = np.isin(labels, order[:k])
        top = float(values[order[k - 1]])
        fits = {}
        if 3 in approaches:
            # On one IsoFLOP budget log D = log C - log N - const: N and D cannot be told apart.
            why = law.too_few(n[seen]) or ("one budget" if k == 1 else None)
            if why:
                skipped["approach3"].append(k)
            else:
                data = law.LawData.from_arrays(n[seen], d[seen], loss[seen])
                try:
                    fits["approach3"] = law.fit(data, method=method, refine=refine).params
                    if fixed:
                        fits["approach3_fixed"] = law.fit(data, method=method, refine=refine, fixed=fixed).params
                except ValueError:          # no finite objective anywhere: nothing to predict with
                    fits.pop("approach3", None)
                    skipped["approach3"].append(k)
        a2 = None
        if 2 in approaches:
            try:
                a2 = isoflop.fit_isoflop(labels[seen], values, n[seen], d[seen], loss[seen], c[seen], profile).n_law
            except (ValueError, np.linalg.LinAlgError):
                skipped["approach2"].append(k)
        if not fits and a2 is None:
            continue
        for j in order[k:]:
            rows = labels == j
            row = {"fit_budgets": k, "fit_max_budget": top, "budget": float(values[j]),
                   "extrapolation": float(values[j] / top), "n_runs": int(rows.sum())}
            for key, p in fits.items():
                row[key] = {**_a3_errors(p, n[rows], d[rows], loss[rows]),
                            "degenerate": law.degenerate(p, n[seen], d[seen])}
            if a2 is not None:
                obs = full_profiles[j].n_opt
                pred = float(a2(values[j]))
                row["approach2"] = {"a": a2.exponent, "N_opt_predicted": pred, "N_opt_observed": obs,
                                    "rel_error": None if obs is None else float(pred / obs - 1)}
            steps.append(row)
    return {"n_budgets": len(values), "budgets": [float(values[g]) for g in order], "fixed": dict(fixed or {}),
            "steps": steps, "by_factor": summarize(steps), "skipped": skipped}


def summarize(steps: list[dict]) -> list[dict]:
    """Median errors per extrapolation-factor bucket (1x, 3x, 10x, ...)."""
    out = []
    for b in sorted({factor_bucket(s["extrapolation"]) for s in steps}):
        group = [s for s in steps if factor_bucket(s["extrapolation"]) == b]
        row = {"factor": b, "n": len(group)}
        for key in ("approach3", "approach3_fixed"):
            errs = [s[key]["mean_abs_rel_error"] for s in group if key in s]
            if errs:
                row[key] = float(np.median(errs))
        errs = [abs(s["approach2"]["rel_error"]) for s in group
                if s.get("approach2") and s["approach2"]["rel_error"] is not None]
        if errs:
            row["approach2"] = float(np.median(errs))
        out.append(row)
    return out


def _pct_pair(e: dict | None) -> str:
    if not e:
        return "-"
    return f"{100 * e['mean_abs_rel_error']:6.2f}% / {100 * e['max_abs_rel_error']:6.2f}%" + (
        " (deg.)" if e.get("degenerate") else "")


def _aggregate(group: list[dict], key: str) -> dict | None:
    """Run-weighted mean |error| and the max over the budgets of one row of the table."""
    g = [s for s in group if key in s]
    if not g:
        return None
    w = np.array([s["n_runs"] for s in g], float)
    return {"mean_abs_rel_error": float(np.sum(w * [s[key]["mean_abs_rel_error"] for s in g]) / w.sum()),
            "max_abs_rel_error": max(s[key]["max_abs_rel_error"] for s in g),
            "degenerate": any(s[key]["degenerate"] for s in g)}


def format_rollout(r: dict) -> list[str]:
    """One row per (budgets fitted, factor bucket); fit.json keeps every predicted budget."""
    fixed = ", ".join(f"{k} = {v:g}" for k, v in r["fixed"].items())
    head = f"  {'fitted up to':>12}{'k':>4}{'factor':>8}{'budgets':>9}{'runs':>6}   {'A3 loss |err| mean / max':>26}"
    if fixed:
        head += f"   {'A3 with ' + fixed:>26}"
    out = ["", f"Rollout over {r['n_budgets']} budgets: fitted on the smallest k, predicting every larger one",
           head + f"   {'A2 N_opt |err|':>14}"]
    keys = sorted({(s["fit_budgets"], factor_bucket(s["extrapolation"])) for s in r["steps"]})
    for k, b in keys:
        group = [s for s in r["steps"] if s["fit_budgets"] == k and factor_bucket(s["extrapolation"]) == b]
        line = (f"  {group[0]['fit_max_budget']:>12.3g}{k:>4}{'~' + format(b, 'g') + 'x':>8}{len(group):>9}"
                f"{sum(s['n_runs'] for s in group):>6}   {_pct_pair(_aggregate(group, 'approach3')):>26}")
        if fixed:
            line += f"   {_pct_pair(_aggregate(group, 'approach3_fixed')):>26}"
        a2 = [abs(s["approach2"]["rel_error"]) for s in group
              if s.get("approach2") and s["approach2"]["rel_error"] is not None]
        out.append(line + f"   {(f'{100 * float(np.median(a2)):.1f}%' if a2 else '-'):>14}")
    if r["by_factor"]:
        out.append("  median over all fits, by extrapolation factor in compute:")
        for b in r["by_factor"]:
            items = []
            if "approach3" in b:
                items.append(f"approach 3 loss {100 * b['approach3']:.2f}%"
                             + (f" ({100 * b['approach3_fixed']:.2f}% with {fixed})" if "approach3_fixed" in b else ""))
            if "approach2" in b:
                items.append(f"approach 2 N_opt {100 * b['approach2']:.1f}%")
            out.append(f"    ~{b['factor']:g}x ({b['n']} budgets predicted): " + ", ".join(items))
    for key, label in (("approach3", "approach 3 (one budget, or too few runs or sizes)"),
                       ("approach2", "approach 2 (fewer than 2 budgets with an interior minimum)")):
        if r["skipped"].get(key):
            out.append(f"  not fitted on the smallest k = {', '.join(map(str, r['skipped'][key]))} budgets: {label}")
    return out
