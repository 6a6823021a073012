"""A fit record (`fit_all`'s dict, fit.json) as the text `scaling fit` prints: Approach 3's
parameters with their intervals, the compute-optimal allocation of every approach, the
held-out checks, the rollout table and the warnings, one section after another. The HTML
report shows the same text (`format_fit`) and the same sentences on the held-out check
(`below_law_line`, `held_out_extremes`), so the two never tell a reader different things.
"""

from __future__ import annotations

from scaling.fit.edges import edge_lines
from scaling.fit.report import REGIME_GAP
from scaling.fit.rollout import format_rollout
from scaling.fit.tasklaw import chain_lines


def below_law_line(runs: list[str]) -> str:
    """The one sentence on held-out runs more than REGIME_GAP below the law (CLI and report)."""
    return (f"{len(runs)} held-out run(s) {100 * REGIME_GAP:.0f}%+ below the law ({', '.join(runs)}): "
            "more than noise; a change of regime the fitted budgets do not show")


def held_out_extremes(h3: dict) -> tuple[dict, dict]:
    """The held-out budget's lowest-loss run and its worst-predicted run (the same dict when one
    run is both), from the check's `runs` (CLI and report)."""
    runs = h3["runs"]
    return min(runs, key=lambda r: r["loss"]), max(runs, key=lambda r: abs(r["rel_error"]))


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
           "  stage 1, the base law above: " + (
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
    best, worst = held_out_extremes(h3)
    lines = [f"  its lowest loss: {best['run']}, {best['loss']:.4f} against {best['predicted']:.4f} predicted "
             f"({100 * best['rel_error']:+.1f}%" + (", also its worst prediction)" if worst is best else ")")]
    if worst is not best:
        lines.append(f"  its worst prediction: {worst['run']}, {worst['loss']:.4f} against {worst['predicted']:.4f} "
                     f"predicted ({100 * worst['rel_error']:+.1f}%)")
    if h3.get("below_law"):
        lines.append(f"  {below_law_line(h3['below_law'])}")
    return lines


def _approach3_lines(a3: dict, fit: dict, boot: str) -> list[str]:
    """Approach 3's law: how it was fitted, then each parameter and derived quantity with its interval."""
    held = ", ".join(f"{k} = {v:g}" for k, v in (a3.get("fixed") or {}).items())
    out = ["", f"Approach 3: L(N, D) = E + A/N^alpha + B/D^beta   ({a3['n_points']} runs, "
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
    return out


def _allocation_lines(fit: dict) -> list[str]:
    """The exponents a and b of every approach fitted, side by side, with their intervals."""
    a3 = fit.get("approach3")
    rows = [(k, fit[f"approach{k}"]) for k in (1, 2) if f"approach{k}" in fit]
    out = []
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
    return out


def _holdout_top_lines(ho: dict) -> list[str]:
    """--holdout-top: the K largest-compute runs, each predicted by the law fitted without them."""
    out = ["", f"Held out the {ho['k']} largest-compute runs; approach 3 fitted on the rest predicts them:",
           f"  {'run':>14}{'N':>10}{'D':>10}{'loss':>9}{'predicted':>11}{'error':>9}"]
    for r in ho["runs"]:
        out.append(f"  {str(r['run'])[:14]:>14}{r['params']:>10.3g}{r['tokens']:>10.3g}{r['loss']:>9.4f}"
                   f"{r['predicted']:>11.4f}{100 * r['rel_error']:>8.2f}%")
    out.append(f"  mean |error| {100 * ho['mean_abs_rel_error']:.2f}%, max {100 * ho['max_abs_rel_error']:.2f}%")
    return out


def _holdout_budget_lines(hb: dict) -> list[str]:
    """The held-out check: approaches 3 and 2 fitted without the largest budget, predicting it."""
    out = ["", f"Held-out check: fitted without the largest budget ({hb['budget']:.3g} FLOPs, {hb['n_runs']} runs), "
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
    return out


def _warning_lines(fit: dict) -> list[str]:
    warns = list(fit["warnings"])
    for k in (1, 2, 3):
        warns += fit.get(f"approach{k}", {}).get("warnings", [])
    return [""] + [f"warning: {w}" for w in warns] if warns else []


def format_fit(fit: dict) -> str:
    """Everything `scaling fit` prints for a fit record, as text."""
    out = [f"{fit['n_runs']} runs from {fit['source']} (N from column {fit['params_column']!r})"
           + (f"; every approach fits {fit['target']!r}, not the LM loss" if fit.get("target") else "")]
    boot = f"95% interval, {fit['bootstrap']} bootstrap resamples (seed {fit['seed']})" if fit["bootstrap"] else ""
    if fit.get("approach3"):
        out += _approach3_lines(fit["approach3"], fit, boot)
    out += _allocation_lines(fit)
    out += edge_lines(fit.get("edges") or [], fit.get("params_column") or "params")
    if fit.get("holdout"):
        out += _holdout_top_lines(fit["holdout"])
    if fit.get("holdout_budget"):
        out += _holdout_budget_lines(fit["holdout_budget"])
    if fit.get("rollout"):
        out += format_rollout(fit["rollout"])
    if fit.get("task"):
        out += chain_lines(fit["task"])
    out += _warning_lines(fit)
    return "\n".join(out)
