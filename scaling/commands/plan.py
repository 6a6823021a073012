"""`scaling plan`: a fitted law extrapolated to a training plan, its optimum and its cost."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling.base.errors import UserError


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
    i = p.add_argument_group("inference in the bill (Sardana et al. 2023)")
    i.add_argument("--inference-tokens", default=None, metavar="T",
                   help="tokens the model will serve over its life, input + output (e.g. 2T): find the N, D "
                        "of least training + inference compute at the plan's loss")
    i.add_argument("--input-len", type=int, default=512, help="per request: tokens the encoder reads (default 512)")
    i.add_argument("--output-len", type=int, default=128, help="per request: tokens generated (default 128)")
    i.add_argument("--target-loss", type=float, default=None,
                   help="the loss to reach (instead of --params/--tokens or --compute)")
    i.add_argument("--objective", default="flops", choices=("flops", "gpu-hours"),
                   help="minimise FLOPs (default) or GPU-hours (serving FLOPs weighed by --inference-mfu)")
    g = p.add_argument_group("cost assumptions")
    g.add_argument("--mfu", type=float, default=0.40, help="model FLOP utilisation in training (default 0.40)")
    g.add_argument("--inference-mfu", type=float, default=None,
                   help="model FLOP utilisation in serving (default: --mfu)")
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
    from scaling.base.cost import CostAssumptions

    if args.inference_mfu is None:
        args.inference_mfu = args.mfu
    for name in ("mfu", "inference_mfu", "pue", "grid_intensity", "a100_power", "h100_power", "a100_price",
                 "h100_price"):
        v = getattr(args, name)
        if not (v >= 0) or (name in ("mfu", "inference_mfu") and not 0 < v <= 1) or (name == "pue" and v < 1):
            raise UserError(f"--{name.replace('_', '-')}: out of range: {v}")
    c = CostAssumptions(mfu=args.mfu, inference_mfu=args.inference_mfu, pue=args.pue,
                        grid_kg_per_kwh=args.grid_intensity)
    c.gpus["A100"].power_kw, c.gpus["A100"].price_per_hour = args.a100_power, args.a100_price
    c.gpus["H100"].power_kw, c.gpus["H100"].price_per_hour = args.h100_power, args.h100_price
    return c


def _n(v) -> str:
    from scaling.base.config import format_count
    return "-" if v is None else format_count(v)


def _ci(lo_hi, fmt) -> str:
    if not lo_hi or lo_hi[0] is None:
        return ""
    return f"  [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]"


def _built_differs(target: float | None, built: float) -> bool:
    """Whether the size rule's shape for a requested size has another parameter count."""
    return bool(target) and abs(target / built - 1) > 1e-9


def format_plan(r: dict, assume) -> str:
    L = r["law"]
    out = [f"law ({L['source']}): L = {L['E']:.5g} + {L['A']:.5g}/N^{L['alpha']:.5g} + {L['B']:.5g}/D^{L['beta']:.5g}",
           f"compute counted by: {r['flop_model']}", ""]
    f4 = lambda v: f"{v:.4f}"  # noqa: E731
    if "plan" in r:
        p = r["plan"]
        out += [f"plan: N {_n(p['params'])}, D {_n(p['tokens'])} ({p['tokens_per_param']:.1f} tokens/param)"]
        if "shape" in p:
            target = p.get("params_target")
            note = (f" (the size rule's shape for {_n(target)}: loss and compute are both for it)"
                    if _built_differs(target, p["params"]) else "")
            out.append(f"  shape: {p['shape']}{note}")
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
    out += format_reach(r)
    return "\n".join(out)


def _compare_reach(law, flop, plans: list) -> dict | None:
    """Reach of the largest plan compared (by compute), named in the output."""
    from scaling.plan.training import planned_model

    priced = [(name, *planned_model(flop, n)[:2], d) for name, n, d in plans]
    name, n, per_token, d = max(priced, key=lambda p: p[2] * p[3])
    x = law.reach(n, float(per_token * d))
    return {**x, "plan": name} if x else None


def format_reach(r: dict) -> list[str]:
    x = r.get("reach")
    if not x:
        return []
    n = "" if x["params_factor"] is None else f"N {x['params_factor']:.3g}x its largest model ({_n(x['fitted_max_params'])}), "
    who = f" ({x['plan']}, the largest plan compared)" if x.get("plan") else ""
    return [f"reach{who}: this law extrapolates {n}C {x['flops_factor']:.3g}x its largest run "
            f"({x['fitted_max_flops']:.3g} FLOPs); the intervals above are its bootstrap's at that distance, "
            "and do not cover a change of regime between the fitted runs and the plan"]


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
    built = [f"{c['name']} {_n(c['params_target'])} -> {_n(c['params'])}" for c in r["compare"]
             if _built_differs(c.get("params_target"), c["params"])]
    if built:
        out.append("N: the size rule's encoder-decoder shape for each plan's size, whose loss and compute these are "
                   f"({', '.join(built)})")
    out += [f"note: {w}" for w in r["warnings"]]
    out += format_reach(r)
    return "\n".join(out)


def format_inference(x: dict, assume) -> str:
    from scaling.base.config import format_count
    src = {"plan": "the plan's", "compute-optimal": "the compute-optimal model's", "given": "given"}[x["target_from"]]
    out = [f"inference in the bill: {format_count(x['inference_tokens'])} inference tokens "
           f"({x['input_len']} in + {x['output_len']} out per request: {format_count(x['requests'])} requests), "
           f"target loss {x['target_loss']:.4f} ({src}), minimising {x['objective']}",
           f"  serving FLOPs per token: {x['inference_flops_per_token']['optimal']:.3g} at the least-compute N, "
           f"{x['inference_flops_per_token']['chinchilla']:.3g} at the Chinchilla-optimal N",
           f"  {'model':20}{'N [95%]':26}{'D [95%]':24}{'D/N':>7}{'train FLOPs':>13}{'serve FLOPs':>13}"
           f"{'total FLOPs':>13}"]
    rows = [("least compute", x["optimal"]), ("Chinchilla-optimal", x["chinchilla"])]
    if "plan" in x:
        rows.append(("the plan", x["plan"]))
    for name, e in rows:
        out.append(f"  {name:20}{_n(e['params']) + _ci(e.get('params_ci'), _n):26}"
                   f"{_n(e['tokens']) + _ci(e.get('tokens_ci'), _n):24}{e['tokens_per_param']:>7.1f}"
                   f"{e['train_flops']:>13.4g}{e['inference_flops']:>13.4g}{e['total_flops']:>13.4g}")
    out.append(f"  {'cost':20}{'GPU':6}{'train days':>12}{'serve days':>12}{'total days':>12}{'energy kWh':>14}"
               f"{'CO2 kg':>12}{'USD':>14}")
    for name, e in rows:
        for gpu, t in e["cost"]["total"].items():
            out.append(f"  {name[:20]:20}{gpu:6}{e['cost']['train'][gpu]['gpu_days']:>12,.0f}"
                       f"{e['cost']['inference'][gpu]['gpu_days']:>12,.0f}{t['gpu_days']:>12,.0f}"
                       f"{t['energy_kwh']:>14,.0f}{t['co2_kg']:>12,.0f}{t['usd']:>14,.0f}")
    pct = lambda v: f"{v:.1f}%"  # noqa: E731
    for label, key in (("least compute", "saving"), ("the plan", "plan_saving")):
        if key not in x:
            continue
        sv = x[key]
        gpus = "; ".join(f"{g}: {b['gpu_days']:,.0f} GPU-days, {b['energy_kwh']:,.0f} kWh, {b['co2_kg']:,.0f} kg CO2, "
                         f"${b['usd']:,.0f}" for g, b in sv["by_gpu"].items())
        out.append(f"  {label} saves {sv['flops']:.3g} FLOPs ({pct(sv['flops_pct'])}"
                   f"{_ci(sv.get('flops_pct_ci'), pct)}) against the Chinchilla-optimal model of the same loss; "
                   f"{gpus}")
    out.append(f"  assumptions: {assume.describe()}")
    out += [f"note: {w}" for w in x["warnings"]]
    return "\n".join(out)


def add_inference(r: dict, law, flop, assume, args, inference_tokens: float) -> None:
    """Attach the `inference` record to a plan record, the target loss taken from the plan."""
    import numpy as np

    from scaling.plan.inference import Serving, inference_plan
    from scaling.plan.training import optimum

    serving = Serving(inference_tokens, args.input_len, args.output_len)
    if args.target_loss is not None:
        target, samples, src, plan = args.target_loss, np.full(len(law.samples), args.target_loss), "given", None
    elif "plan" in r:
        n, d = r["plan"]["params"], r["plan"]["tokens"]
        target, samples, src, plan = r["plan"]["loss"], law.loss(n, d, point=False)[:, 0], "plan", (n, d)
    else:
        target, src, plan = r["optimal"]["loss"], "compute-optimal", None
        samples = optimum(law, r["compute"], flop, point=False)[2]
    r["inference"] = inference_plan(law, flop, assume, serving, target, target_samples=samples, target_from=src,
                                    objective=args.objective, plan=plan)


def compare_inference(r: dict, law, flop, assume, args, inference_tokens: float) -> None:
    """Each famous plan served for the same T tokens, against the least-compute and the
    Chinchilla-optimal models of its own loss."""
    from scaling.plan.inference import Serving, inference_plan

    serving = Serving(inference_tokens, args.input_len, args.output_len)
    for row in r["compare"]:
        n, d = row["params"], row["tokens"]
        row["inference"] = inference_plan(law, flop, assume, serving, row["loss"],
                                          target_samples=law.loss(n, d, point=False)[:, 0], target_from="plan",
                                          objective=args.objective, plan=(n, d))


def format_compare_inference(r: dict) -> str:
    from scaling.base.config import format_count
    x0 = r["compare"][0]["inference"]
    out = [f"served for {format_count(x0['inference_tokens'])} inference tokens ({x0['input_len']} in + "
           f"{x0['output_len']} out per request), each against the models of its own loss:",
           f"{'plan':12}{'total FLOPs':>13}{'least-compute N':>17}{'D':>8}{'total':>11}{'Chinchilla N':>14}"
           f"{'D':>8}{'total':>11}  {'plan saves':>11}{'least saves':>12}"]
    for c in r["compare"]:
        x = c["inference"]
        o, ch = x["optimal"], x["chinchilla"]
        out.append(f"{c['name'][:12]:12}{x['plan']['total_flops']:>13.3g}{_n(o['params']):>17}{_n(o['tokens']):>8}"
                   f"{o['total_flops']:>11.3g}{_n(ch['params']):>14}{_n(ch['tokens']):>8}{ch['total_flops']:>11.3g}"
                   f"  {x['plan_saving']['flops_pct']:>10.1f}%{x['saving']['flops_pct']:>11.1f}%")
    out.append("saves: total (training + inference) compute below the Chinchilla-optimal model of the same loss")
    return "\n".join(out)


def build(args: argparse.Namespace) -> tuple[dict, object, object, object]:
    """The plan record `scaling plan` prints, and the law, FLOP count and cost assumptions it
    used: the one path from arguments to a plan (`scaling report --plan` takes it too)."""
    from scaling.base.config import parse_count
    from scaling.plan.training import FlopModel, Law, make_plan

    params = parse_count(args.params, "--params") if args.params is not None else None
    tokens = parse_count(args.tokens, "--tokens") if args.tokens is not None else None
    compute = float(parse_count(args.compute, "--compute")) if args.compute is not None else None
    inference_tokens = None
    if args.inference_tokens is not None:
        zero = str(args.inference_tokens).strip() in ("0", "0.0")
        inference_tokens = 0.0 if zero else float(parse_count(args.inference_tokens, "--inference-tokens"))
    elif args.target_loss is not None:
        inference_tokens = 0.0
    if tokens is not None and params is None:
        raise UserError("--tokens needs --params (or give --compute alone)")
    if args.target_loss is not None and (params is not None or compute is not None):
        raise UserError("--target-loss goes alone (or give --params/--tokens or --compute and match their loss)")
    if args.compare is None and params is None and compute is None and args.target_loss is None:
        raise UserError("give --params and --tokens, --compute, --params alone, --target-loss, or --compare")
    if args.compare is not None and args.target_loss is not None:
        raise UserError("--target-loss does not combine with --compare (each plan's own loss is the target)")
    if args.seq_len < 8:
        raise UserError(f"--seq-len: must be at least 8, got {args.seq_len}")
    if not 0 <= args.noise_density < 1:
        raise UserError(f"--noise-density: must be in [0, 1), got {args.noise_density}")
    assume = assumptions_from_args(args)
    law = Law.from_fit_file(args.fit) if args.fit else Law.default()
    flop = FlopModel(args.flops, args.seq_len, args.noise_density, parse_count(args.vocab, "--vocab"))
    if args.compare is not None:
        from scaling.plan.training import FAMOUS, compare_plans, read_plans_toml
        plans = list(FAMOUS) + (read_plans_toml(args.compare) if args.compare else [])
        if params is not None and tokens is not None:
            plans.append(("this plan", float(params), float(tokens)))
        r = {"law": {**law.params, "source": law.source}, "flop_model": flop.describe(),
             "compare": compare_plans(law, flop, plans),
             "reach": _compare_reach(law, flop, plans),
             "warnings": flop.warnings + ([law.note] if law.note else []) + [
                 "absolute losses belong to the data and tokenizer the law was fitted on; "
                 "ratios and allocations are what transfer"]}
        if inference_tokens is not None:
            compare_inference(r, law, flop, assume, args, inference_tokens)
    else:
        if args.target_loss is not None:
            # The plan shown is the Chinchilla-optimal model of that loss: its training compute.
            from scaling.plan.inference import Serving, least_compute
            if not args.target_loss > law.params["E"]:
                raise UserError(f"--target-loss {args.target_loss:g} is not above the law's irreducible loss "
                                f"E = {law.params['E']:.4g}: no model reaches it")
            chin = least_compute(law, flop, args.target_loss, Serving(0.0, args.input_len, args.output_len))
            compute = float(chin["train"][0])
        r = make_plan(law, flop, assume, params=params, tokens=tokens, compute=compute)
        r["reach"] = law.reach(r.get("plan", {}).get("params") or r["optimal"]["params"], r["compute"])
        if inference_tokens is not None:
            add_inference(r, law, flop, assume, args, inference_tokens)
    return r, law, flop, assume


def format_all(r: dict, assume) -> str:
    """Everything `scaling plan` prints for a record, as text."""
    parts = [format_compare(r) if "compare" in r else format_plan(r, assume)]
    if "inference" in r:
        parts.append(format_inference(r["inference"], assume))
    if "compare" in r and "inference" in r["compare"][0]:
        parts.append(format_compare_inference(r))
    return "\n\n".join(parts)


def parse_plan_args(argv: list[str], prog: str = "scaling plan") -> argparse.Namespace:
    """`scaling plan`'s own arguments, parsed by its own parser (for `scaling report --plan`)."""
    class Parser(argparse.ArgumentParser):
        def error(self, message):   # one line, not argparse's usage and exit
            raise UserError(f"{prog}: {message} (the plan's arguments are `scaling plan`'s: see "
                            "`scaling plan --help`)")

    parser = Parser(prog=prog.split()[0], add_help=False)
    register(parser.add_subparsers())
    return parser.parse_args(["plan", *argv])


def run(args: argparse.Namespace) -> int:
    from scaling.base.rundir import atomic_write_json

    r, law, flop, assume = build(args)
    if args.plots:
        write_plan_figures(r, law, flop, args, Path(args.plots))
    if args.out:
        atomic_write_json(Path(args.out), r)
    if args.json:
        print(json.dumps(r))
    else:
        print(format_all(r, assume))
    return 0


def plan_figures(r: dict, law, flop) -> list:
    """The plan's figures: models on the law's frontier, and the training + serving cost
    against N when the plan serves tokens."""
    from scaling import figures

    compare = r if "compare" in r else {"compare": []}
    figs = [figures.famous(compare, law, flop, plan=None if "compare" in r else r)]
    x = r.get("inference")
    if x is not None:
        from scaling.plan.inference import Serving, cost_curve
        serving = Serving(x["inference_tokens"], x["input_len"], x["output_len"])
        figs.insert(0, figures.cost(cost_curve(law, flop, serving, x["target_loss"], x)))
    return figs


def write_plan_figures(r: dict, law, flop, args, out_dir: Path) -> None:
    from scaling.figures.page import write_figures

    page = write_figures(plan_figures(r, law, flop), out_dir / "plan.html", "scaling plan")
    print(f"figures: {page}", file=sys.stderr)
