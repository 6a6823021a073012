"""`scaling plan`: a fitted law extrapolated to a training plan, its optimum and its cost."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="extrapolate a fit to a training plan and its cost",
        description="Predicted loss, compute, compute-optimal allocation and cost of a training plan "
                    "(e.g. --params 20B --tokens 1T), with intervals from the fit's bootstrap.")
    p.add_argument("--params", default=None, help="model size N, e.g. 20B")
    p.add_argument("--tokens", default=None, help="training tokens D, e.g. 1T")
    p.add_argument("--compute", default=None, help="training FLOPs alone, e.g. 1.2e23 (plan = the optimum)")
    p.add_argument("--fit", default=None, metavar="FILE",
                   help="fit.json from `scaling fit --out` (default: the Chinchilla 240-point refit)")
    p.add_argument("--flops", default="encdec", choices=("encdec", "6nd"),
                   help="how compute is counted for the optimum (default: encoder-decoder formula)")
    p.add_argument("--seq-len", type=int, default=1024, help="source window length (default 1024)")
    p.add_argument("--noise-density", type=float, default=0.15, help="denoising noise (default 0.15)")
    p.add_argument("--vocab", default="150000", help="vocabulary for the FLOP formula (default AlexaTM's 150000)")
    g = p.add_argument_group("cost assumptions")
    g.add_argument("--mfu", type=float, default=0.40, help="model FLOP utilisation (default 0.40)")
    g.add_argument("--pue", type=float, default=1.1, help="data-centre PUE (default 1.1)")
    g.add_argument("--grid-intensity", type=float, default=0.385, help="kg CO2 per kWh (default 0.385)")
    g.add_argument("--a100-power", type=float, default=0.40, help="A100 board power, kW (default 0.40)")
    g.add_argument("--h100-power", type=float, default=0.70, help="H100 board power, kW (default 0.70)")
    g.add_argument("--a100-price", type=float, default=2.0, help="USD per A100-hour (default 2.0)")
    g.add_argument("--h100-price", type=float, default=4.0, help="USD per H100-hour (default 4.0)")
    p.add_argument("--compare", nargs="?", const="", default=None, metavar="PLANS.toml",
                   help="place GPT-3, MT-NLG, PaLM, Chinchilla, AlexaTM (and the [[plan]] tables of "
                        "PLANS.toml: name, params, tokens) on the fitted frontier")
    p.add_argument("--plots", default=None, metavar="DIR", help="write DIR/plan.html (N-D plane with the plans)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE")
    p.set_defaults(func=run)


def assumptions_from_args(args):
    from scaling.cost import CostAssumptions

    for name in ("mfu", "pue", "grid_intensity", "a100_power", "h100_power", "a100_price", "h100_price"):
        v = getattr(args, name)
        if not (v >= 0) or (name in ("mfu",) and not 0 < v <= 1) or (name == "pue" and v < 1):
            raise UserError(f"--{name.replace('_', '-')}: out of range: {v}")
    c = CostAssumptions(mfu=args.mfu, inference_mfu=args.mfu, pue=args.pue, grid_kg_per_kwh=args.grid_intensity)
    c.gpus["A100"].power_kw, c.gpus["A100"].price_per_hour = args.a100_power, args.a100_price
    c.gpus["H100"].power_kw, c.gpus["H100"].price_per_hour = args.h100_power, args.h100_price
    return c


def _n(v) -> str:
    from scaling.config import format_count
    return "-" if v is None else format_count(v)


def _ci(lo_hi, fmt) -> str:
    if not lo_hi or lo_hi[0] is None:
        return ""
    return f"  [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]"


def format_plan(r: dict, assume) -> str:
    L = r["law"]
    out = [f"law ({L['source']}): L = {L['E']:.5g} + {L['A']:.5g}/N^{L['alpha']:.5g} + {L['B']:.5g}/D^{L['beta']:.5g}",
           f"compute counted by: {r['flop_model']}", ""]
    f4 = lambda v: f"{v:.4f}"  # noqa: E731
    if "plan" in r:
        p = r["plan"]
        out += [f"plan: N {_n(p['params'])}, D {_n(p['tokens'])} ({p['tokens_per_param']:.1f} tokens/param)"]
        if "shape" in p:
            out.append(f"  shape: {p['shape']}")
        if "tokens_ci" in p:
            out.append(f"  compute-optimal tokens for this N{_ci(p['tokens_ci'], _n)}")
        out += [f"  predicted loss     {p['loss']:.4f}{_ci(p.get('loss_ci'), f4)}",
                f"  compute            {p['flops']:.4g} FLOPs" + (
                    f" (encoder-decoder formula); 6ND = {p['flops_6nd']:.4g}" if p["flops_encdec"] else " (6ND)"),
                ""]
    o = r["optimal"]
    out += [f"compute-optimal at {r['compute']:.4g} FLOPs (95% interval):",
            f"  N {_n(o['params'])}{_ci(o.get('params_ci'), _n)}",
            f"  D {_n(o['tokens'])}{_ci(o.get('tokens_ci'), _n)}",
            f"  tokens/param {o['tokens_per_param']:.1f}{_ci(o.get('tokens_per_param_ci'), lambda v: f'{v:.1f}')}",
            f"  loss {o['loss']:.4f}{_ci(o.get('loss_ci'), f4)}"]
    if "plan" in r:
        p = r["plan"]
        out.append(f"  the plan gives up {p['loss_given_up']:.4f} loss against it"
                   f"{_ci(p.get('loss_given_up_ci'), f4)}")
    out += ["", f"cost of {r['compute']:.4g} training FLOPs ({assume.describe()}):",
            f"  {'GPU':6}{'GPU-hours':>14}{'GPU-days':>12}{'energy kWh':>14}{'CO2 kg':>12}{'USD':>14}"]
    for gpu, b in r["cost"].items():
        out.append(f"  {gpu:6}{b['gpu_hours']:>14,.0f}{b['gpu_days']:>12,.0f}{b['energy_kwh']:>14,.0f}"
                   f"{b['co2_kg']:>12,.0f}{b['usd']:>14,.0f}")
    a = r["alexatm_reported"]
    out.append(f"  AlexaTM reported {a['gpus']} A100 x {a['days']} days = {a['gpu_hours']:,} A100-hours, "
               f"{a['energy_kwh']:,.0f} kWh, {a['co2_kg']:,.0f} kg CO2 under these assumptions "
               f"(implies {a['implied_flops_at_mfu']:.3g} FLOPs at this MFU)")
    out += [f"note: {w}" for w in r["warnings"]]
    return "\n".join(out)


def format_compare(r: dict) -> str:
    L = r["law"]
    out = [f"law ({L['source']}): L = {L['E']:.5g} + {L['A']:.5g}/N^{L['alpha']:.5g} + {L['B']:.5g}/D^{L['beta']:.5g}",
           f"compute counted by: {r['flop_model']}", "",
           f"{'plan':12}{'N':>8}{'D':>8}{'D/N':>7}{'FLOPs':>10}  {'optimal N [95%]':24}{'optimal D':>10}"
           f"{'D/N':>7}{'x over':>8}  loss given up [95%]"]
    for c in r["compare"]:
        ci = c.get("optimal_params_ci") or [None, None]
        nci = f"{_n(c['optimal_params'])} [{_n(ci[0])}, {_n(ci[1])}]" if ci[0] else _n(c["optimal_params"])
        g = c.get("loss_given_up_ci") or [None, None]
        gci = f" [{g[0]:.4f}, {g[1]:.4f}]" if g[0] is not None else ""
        out.append(f"{c['name'][:12]:12}{_n(c['params']):>8}{_n(c['tokens']):>8}{c['tokens_per_param']:>7.1f}"
                   f"{c['flops']:>10.3g}  {nci:24}{_n(c['optimal_tokens']):>10}{c['optimal_tokens_per_param']:>7.1f}"
                   f"{c['overtrained']:>8.2f}  {c['loss_given_up']:.4f}{gci}")
    out.append("x over: tokens per parameter over the optimum's (>1 over-trained, <1 under-trained)")
    out += [f"note: {w}" for w in r["warnings"]]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from scaling.config import parse_count
    from scaling.plan import FlopModel, Law, make_plan
    from scaling.rundir import atomic_write_json

    params = parse_count(args.params, "--params") if args.params is not None else None
    tokens = parse_count(args.tokens, "--tokens") if args.tokens is not None else None
    compute = float(parse_count(args.compute, "--compute")) if args.compute is not None else None
    if tokens is not None and params is None:
        raise UserError("--tokens needs --params (or give --compute alone)")
    if args.compare is None and params is None and compute is None:
        raise UserError("give --params and --tokens, --compute, --params alone, or --compare")
    if args.seq_len < 8:
        raise UserError(f"--seq-len: must be at least 8, got {args.seq_len}")
    if not 0 <= args.noise_density < 1:
        raise UserError(f"--noise-density: must be in [0, 1), got {args.noise_density}")
    assume = assumptions_from_args(args)
    law = Law.from_fit_file(args.fit) if args.fit else Law.default()
    flop = FlopModel(args.flops, args.seq_len, args.noise_density, parse_count(args.vocab, "--vocab"))
    if args.compare is not None:
        from scaling.plan import FAMOUS, compare_plans, read_plans_toml
        plans = list(FAMOUS) + (read_plans_toml(args.compare) if args.compare else [])
        if params is not None and tokens is not None:
            plans.append(("this plan", float(params), float(tokens)))
        r = {"law": {**law.params, "source": law.source}, "flop_model": flop.describe(),
             "compare": compare_plans(law, flop, plans),
             "warnings": flop.warnings + ([law.note] if law.note else []) + [
                 "absolute losses belong to the data and tokenizer the law was fitted on; "
                 "ratios and allocations are what transfer"]}
    else:
        r = make_plan(law, flop, assume, params=params, tokens=tokens, compute=compute)
    if args.plots:
        from scaling.plots import nd_plane_figure, write_page
        pl_ = [{"name": c["name"], "params": c["params"], "tokens": c["tokens"]} for c in r.get("compare", [])]
        if "plan" in r:
            pl_.append({"name": "plan", "params": r["plan"]["params"], "tokens": r["plan"]["tokens"]})
        page = write_page([nd_plane_figure(law.params, None, pl_)], Path(args.plots) / "plan.html", "scaling plan")
        print(f"figures: {page}", file=sys.stderr)
    if args.out:
        atomic_write_json(Path(args.out), r)
    if args.json:
        print(json.dumps(r))
    else:
        print(format_compare(r) if "compare" in r else format_plan(r, assume))
    return 0
