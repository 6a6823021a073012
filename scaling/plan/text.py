"""A plan record (`scaling.plan.record.build`'s dict) as the text `scaling plan` prints: the
law and the FLOP count, the plan against the compute-optimal model of its compute, the bill,
how far the plan lies beyond the fitted runs, the famous models compared (`--compare`) and
the inference in the bill (`--inference-tokens`). `format_all` is all of it; the HTML report
shows the same text.
"""

from __future__ import annotations

from scaling.base.config import format_count


def _n(v) -> str:
    return "-" if v is None else format_count(v)


def amount(v: float) -> str:
    """A cost: whole units with thousands separators from 100 up, three significant figures
    below, so that a small plan's bill never reads 0."""
    if abs(v) >= 100 or v == 0:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.1e}"


def ratio(v: float) -> str:
    """Tokens per parameter: one decimal from 10 up, three significant figures below (a law far
    from its data can put the optimum at 0.026 tokens a parameter, which .1f prints as 0.0)."""
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


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
        out += [f"plan: N {_n(p['params'])}, D {_n(p['tokens'])} ({ratio(p['tokens_per_param'])} tokens/param)"]
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
    # The interval is named only where the fit's bootstrap gave one.
    out += [f"compute-optimal at {r['compute']:.4g} FLOPs{' (95% interval)' if o.get('params_ci') else ''}:",
            f"  N {_n(o['params'])}{_ci(o.get('params_ci'), _n)}",
            f"  D {_n(o['tokens'])}{_ci(o.get('tokens_ci'), _n)}",
            f"  tokens/param {ratio(o['tokens_per_param'])}{_ci(o.get('tokens_per_param_ci'), ratio)}",
            f"  loss {o['loss']:.4f}{_ci(o.get('loss_ci'), f4)}"]
    if "plan" in r:
        p = r["plan"]
        out.append(f"  the plan gives up {p['loss_given_up']:.4f} loss against it"
                   f"{_ci(p.get('loss_given_up_ci'), f4)}")
    out += ["", f"cost of {r['compute']:.4g} training FLOPs ({assume.describe()}):",
            f"  {'GPU':6}{'GPU-hours':>14}{'GPU-days':>12}{'energy kWh':>14}{'CO2 kg':>12}{'USD':>14}"]
    for gpu, b in r["cost"].items():
        out.append(f"  {gpu:6}{amount(b['gpu_hours']):>14}{amount(b['gpu_days']):>12}{amount(b['energy_kwh']):>14}"
                   f"{amount(b['co2_kg']):>12}{amount(b['usd']):>14}")
    a = r["alexatm_reported"]
    out.append(f"  AlexaTM reported {a['gpus']} A100 x {a['days']} days = {a['gpu_hours']:,} A100-hours, "
               f"{a['energy_kwh']:,.0f} kWh, {a['co2_kg']:,.0f} kg CO2 under these assumptions "
               f"(implies {a['implied_flops_at_mfu']:.3g} FLOPs at this MFU)")
    out += [f"note: {w}" for w in r["warnings"]]
    out += format_reach(r)
    return "\n".join(out)


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
            out.append(f"  {name[:20]:20}{gpu:6}{amount(e['cost']['train'][gpu]['gpu_days']):>12}"
                       f"{amount(e['cost']['inference'][gpu]['gpu_days']):>12}{amount(t['gpu_days']):>12}"
                       f"{amount(t['energy_kwh']):>14}{amount(t['co2_kg']):>12}{amount(t['usd']):>14}")
    pct = lambda v: f"{v:.1f}%"  # noqa: E731
    for label, key in (("least compute", "saving"), ("the plan", "plan_saving")):
        if key not in x:
            continue
        sv = x[key]
        gpus = "; ".join(f"{g}: {amount(b['gpu_days'])} GPU-days, {amount(b['energy_kwh'])} kWh, {amount(b['co2_kg'])} kg CO2, "
                         f"${amount(b['usd'])}" for g, b in sv["by_gpu"].items())
        out.append(f"  {label} saves {sv['flops']:.3g} FLOPs ({pct(sv['flops_pct'])}"
                   f"{_ci(sv.get('flops_pct_ci'), pct)}) against the Chinchilla-optimal model of the same loss; "
                   f"{gpus}")
    out.append(f"  assumptions: {assume.describe()}")
    out += [f"note: {w}" for w in x["warnings"]]
    return "\n".join(out)


def format_compare_inference(r: dict) -> str:
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


def format_task(t: dict) -> str:
    """The plan's task: the two-step law's chain at the plan's N and D."""
    f4 = lambda v: f"{v:.4f}"  # noqa: E731
    at = {"lm-loss": " (the LM loss's compute optimum, by --fit; the task law from --task-fit)",
          "task-loss": " (the task loss's own compute optimum, not the LM loss's a run would be planned by: "
                       "--fit LM-LOSS-FIT --task-fit TASK-FIT predicts at that)"}.get(t.get("at"), "")
    out = [f"task {t['name']} at N {_n(t['params'])}, D {_n(t['tokens'])}{at} (the fit's two-step task law, "
           "95% interval over both steps):",
           f"  predicted task loss  {t['task_loss']:.4f}{_ci(t.get('task_loss_ci'), f4)}  ({t['target']})"]
    if t.get("accuracy") is None:
        out.append(f"  predicted accuracy   - (step 2 not fitted: {t.get('accuracy_refused')})")
    else:
        out.append(f"  predicted accuracy   {t['accuracy']:.4f}{_ci(t.get('accuracy_ci'), f4)}  "
                   f"({t['accuracy_column']})")
    return "\n".join(out)


def format_all(r: dict, assume) -> str:
    """Everything `scaling plan` prints for a record, as text."""
    parts = [format_compare(r) if "compare" in r else format_plan(r, assume)]
    if "task" in r:
        parts.append(format_task(r["task"]))
    if "inference" in r:
        parts.append(format_inference(r["inference"], assume))
    if "compare" in r and "inference" in r["compare"][0]:
        parts.append(format_compare_inference(r))
    return "\n\n".join(parts)
