"""What `scaling compare` prints: the recipes, the compute-equivalence multiplier k(C) with its
interval at the ends and middle of the runs' compute range (and at a plan's compute), the ratios
of compute-optimal N and D, each recipe's optimum, and what limits the answer. Reads only the
comparison's record (scaling/fit/compare.py), so a notebook and the report print the same."""

from __future__ import annotations

import math

from scaling.base.config import format_count


def _k(v: float, beyond: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v >= 1e4 or beyond and v > 1:
        return ">1e4"
    if v <= 1e-4 or beyond and v < 1:
        return "<1e-4"
    return f"{v:.3g}"


def _ci(lo, hi, fmt=_k) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _unit(metric: str) -> str:
    return "bits per byte" if "bpb" in metric.lower() else "nats per token"


def shown_rows(record: dict) -> list[float]:
    """The computes a summary shows: the ends and middle of the runs' range, and the plan's."""
    ref = record["reference"]
    inside = [r["compute"] for r in record["rows"] if r["recipe"] == ref and r["in_range"]]
    picks = sorted({inside[0], inside[len(inside) // 2], inside[-1]}) if inside else []
    if record.get("plan_compute"):
        plan = min((r["compute"] for r in record["rows"] if r["recipe"] == ref),
                   key=lambda c: abs(math.log(c / record["plan_compute"])))
        picks.append(plan)
    return picks


def _where(record: dict, c: float) -> str:
    plan = record.get("plan_compute")
    label = f"{c:.3g}"
    if plan and abs(math.log(c / plan)) < 1e-6:
        label += " (plan)"
    return label


def recipe_lines(record: dict) -> list[str]:
    out = []
    for r in record["recipes"]:
        lo, hi = r["range"]["flops"]
        law = r["law"]
        tag = " (reference)" if r["name"] == record["reference"] else ""
        out.append(f"  {r['name']}{tag}: {r['n_runs']} runs over {r['n_sizes']} sizes, {lo:.3g}-{hi:.3g} FLOPs, from "
                   f"{r['source']} ({r['column']}, N from {r['params_column']})")
        out.append(f"      L = {law['E']:.4g} + {law['A']:.4g}/N^{law['alpha']:.3f} + {law['B']:.4g}/D^{law['beta']:.3f}"
                   f"; {r['n_samples']} usable bootstrap laws; compute: {r['flop_count'].get('kind')}"
                   + (f"; DEGENERATE: {r['degenerate']}" if r.get("degenerate") else ""))
    return out


def multiplier_lines(record: dict, picks: list[float]) -> list[str]:
    ref = record["reference"]
    out = []
    for name in [r["name"] for r in record["recipes"][1:]]:
        out.append(f"  {name} against {ref}: k = the compute {name} needs to reach {ref}'s compute-optimal "
                   f"{record['metric']} at C (k > 1: {ref} ahead)")
        out.append(f"    {'compute C':<16}{'k':>8}  {'95% interval':<20}{'N_opt ratio [95%]':<26}"
                   f"{'D_opt ratio [95%]':<26}verdict")
        for row in (r for r in record["rows"] if r["recipe"] == name and r["compute"] in picks):
            beyond = row["k_beyond"]
            note = "" if row["compute_needed_in_range"] else " (k C beyond its runs)"
            n = f"{_r(row['params_ratio'])} {_ci(row['params_ratio_lower'], row['params_ratio_upper'], _r)}"
            d = f"{_r(row['tokens_ratio'])} {_ci(row['tokens_ratio_lower'], row['tokens_ratio_upper'], _r)}"
            out.append(f"    {_where(record, row['compute']):<16}{_k(row['k'], beyond):>8}  "
                       f"{_ci(row['k_lower'], row['k_upper']):<20}{n:<26}{d:<26}{row['verdict']}{note}")
    return out


def _r(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def optimum_lines(record: dict, picks: list[float]) -> list[str]:
    out = [f"    {'recipe':<18}{'compute C':<16}{'N_opt [95%]':<30}{'D_opt [95%]':<30}{record['metric']} [95%]"]
    for row in (r for r in record["rows"] if r["compute"] in picks):
        n = f"{format_count(row['params'])} [{format_count(row['params_lower'])}, {format_count(row['params_upper'])}]"
        d = f"{format_count(row['tokens'])} [{format_count(row['tokens_lower'])}, {format_count(row['tokens_upper'])}]"
        out.append(f"    {row['recipe']:<18}{_where(record, row['compute']):<16}{n:<30}{d:<30}"
                   f"{row['loss']:.4f} [{row['loss_lower']:.4f}, {row['loss_upper']:.4f}]")
    return out


def trust_lines(record: dict) -> list[str]:
    """What limits the answer: extrapolation, degenerate laws, each fit's warnings, notes."""
    out = []
    plan = record.get("plan_compute")
    if plan:
        hi = max(r["range"]["flops"][1] for r in record["recipes"])
        if plan > hi:
            out.append(f"  the plan's compute is {plan / hi:.3g}x the largest run's: k there is the laws' extrapolation, "
                       "and its interval holds only the runs' noise, not the laws' form")
    for r in record["recipes"]:
        out += [f"  {r['name']}: {w}" for w in r["warnings"]]
    out += [f"  {n}" for n in record.get("notes") or []]
    return out


def format_comparison(record: dict) -> str:
    """The comparison's text (`scaling compare`, `Comparison.summary()`, the report's section)."""
    picks = shown_rows(record)
    lines = [f"Recipes compared on {record['metric']} ({_unit(record['metric'])}): Approach 3 fitted to each sweep, "
             f"{record['bootstrap']} bootstrap resamples of its runs, {record['paired_samples']} paired; 95% intervals",
             *recipe_lines(record), "", "Compute-equivalence multiplier:", *multiplier_lines(record, picks), "",
             "Compute-optimal models:", *optimum_lines(record, picks)]
    trust = trust_lines(record)
    if trust:
        lines += ["", "How far to trust it:", *trust]
    return "\n".join(lines)
