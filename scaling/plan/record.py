"""From a `PlanRequest` to the plan record `scaling plan` prints (and `--json` writes): the
request's values checked, the law (a fit file or the default), the FLOP count and the cost
assumptions made, then either the plan against its optimum (`make_plan`) or the famous models
compared on the law's frontier (`compare_plans`), with the inference in the bill when the
request serves tokens. `build` is the one path from a request to a plan: `scaling plan`,
`scaling report --plan` and a notebook all take it.
"""

from __future__ import annotations

import math

import numpy as np

from scaling.base.config import parse_count
from scaling.base.cost import CostAssumptions
from scaling.base.errors import UserError
from scaling.base.flops import FlopCount
from scaling.plan.inference import Serving, inference_plan, least_compute
from scaling.plan.request import PlanRequest
from scaling.plan.training import (FAMOUS, FlopModel, Law, compare_plans, make_plan, optimum, planned_model,
                                   read_plans_toml)

_COST_FLAGS = ("mfu", "inference_mfu", "pue", "grid_intensity", "a100_power", "h100_power", "a100_price", "h100_price")


def assumptions(req: PlanRequest) -> CostAssumptions:
    """The cost assumptions of a request, each checked against its range (MFU in (0, 1], PUE >= 1)."""
    values = {name: getattr(req, name) for name in _COST_FLAGS}
    if values["inference_mfu"] is None:
        values["inference_mfu"] = values["mfu"]
    for name, v in values.items():
        if not (v >= 0) or (name in ("mfu", "inference_mfu") and not 0 < v <= 1) or (name == "pue" and v < 1):
            raise UserError(f"--{name.replace('_', '-')}: out of range: {v}")
    c = CostAssumptions(mfu=values["mfu"], inference_mfu=values["inference_mfu"], pue=values["pue"],
                        grid_kg_per_kwh=values["grid_intensity"])
    c.gpus["A100"].power_kw, c.gpus["A100"].price_per_hour = values["a100_power"], values["a100_price"]
    c.gpus["H100"].power_kw, c.gpus["H100"].price_per_hour = values["h100_power"], values["h100_price"]
    return c


def _counts(req: PlanRequest) -> tuple:
    """params, tokens, compute and inference tokens as numbers (None where not asked). A target
    loss alone serves 0 tokens: its record still carries the inference block."""
    params = parse_count(req.params, "--params") if req.params is not None else None
    tokens = parse_count(req.tokens, "--tokens") if req.tokens is not None else None
    compute = float(parse_count(req.compute, "--compute")) if req.compute is not None else None
    inference_tokens = None
    if req.inference_tokens is not None:
        zero = str(req.inference_tokens).strip() in ("0", "0.0")
        inference_tokens = 0.0 if zero else float(parse_count(req.inference_tokens, "--inference-tokens"))
    elif req.target_loss is not None:
        inference_tokens = 0.0
    return params, tokens, compute, inference_tokens


def _check(req: PlanRequest, params, tokens, compute) -> None:
    """The combinations of arguments a plan refuses, and the FLOP formula's own ranges."""
    if tokens is not None and params is None:
        raise UserError("--tokens needs --params (or give --compute alone)")
    if req.target_loss is not None and (params is not None or compute is not None):
        raise UserError("--target-loss goes alone (or give --params/--tokens or --compute and match their loss)")
    if req.compare is None and params is None and compute is None and req.target_loss is None:
        raise UserError("give --params and --tokens, --compute, --params alone, --target-loss, or --compare")
    if req.compare is not None and req.task_fit:
        raise UserError("--task-fit predicts a task at one plan: it does not combine with --compare")
    if req.compare is not None and req.target_loss is not None:
        raise UserError("--target-loss does not combine with --compare (each plan's own loss is the target)")
    if req.seq_len is not None and req.seq_len < 8:
        raise UserError(f"--seq-len: must be at least 8, got {req.seq_len}")
    if req.noise_density is not None and not 0 <= req.noise_density < 1:
        raise UserError(f"--noise-density: must be in [0, 1), got {req.noise_density}")


def plan_count(req: PlanRequest, law: Law) -> FlopCount:
    """The plan's FLOP count: the fit's own (fit.json's flop_count) when the request states
    none, so that the plan, the fit's a, b, G and the figures count compute one way; else
    `--flops 6nd`, or the encoder-decoder formula with the stated window, noise and vocabulary
    over the fit's (or AlexaTM's 1024, 0.15 and 150000). A stated count that differs from the
    fit's is said in the plan's warnings."""
    stated = {k: v for k, v in (("seq_len", req.seq_len), ("noise_density", req.noise_density),
                                ("vocab_size", None if req.vocab is None else int(parse_count(req.vocab, "--vocab"))))
              if v is not None}
    if req.flops is None and not stated:
        return law.count_for(None)
    if req.flops == "6nd":
        flop = FlopCount("6nd")
    else:
        base = law.flop_count if law.flop_count is not None and not law.flop_count.is_power else FlopCount()
        flop = FlopCount(**{**vars(base), **stated, "kind": req.flops or base.kind, "warnings": []})
    if law.flop_count is not None and flop != law.flop_count:
        flop.warnings.append(f"this plan counts compute by {flop.describe()}; the fit counted its runs by "
                             f"{law.flop_count.describe()} (its a, b, G and figures use that)")
    return flop


def _compare_reach(law: Law, flop: FlopModel, plans: list) -> dict | None:
    """Reach of the largest plan compared (by compute), named in the output."""
    priced = [(name, *planned_model(flop, n)[:2], d) for name, n, d in plans]
    name, n, per_token, d = max(priced, key=lambda p: p[2] * p[3])
    x = law.reach(n, float(per_token * d))
    return {**x, "plan": name} if x else None


def add_inference(r: dict, law: Law, flop: FlopModel, assume, req: PlanRequest, inference_tokens: float) -> None:
    """Attach the `inference` record to a plan record, the target loss taken from the plan."""
    serving = Serving(inference_tokens, req.input_len, req.output_len)
    if req.target_loss is not None:
        target, samples, src, plan = req.target_loss, np.full(len(law.samples), req.target_loss), "given", None
    elif "plan" in r:
        n, d = r["plan"]["params"], r["plan"]["tokens"]
        plan = (n, d, flop.shape(r["plan"]["params_target"]))        # billed as its own shape, as the plan is
        target, samples, src = r["plan"]["loss"], law.loss(n, d, point=False)[:, 0], "plan"
    else:
        target, src, plan = r["optimal"]["loss"], "compute-optimal", None
        samples = optimum(law, r["compute"], flop, point=False)[2]
    r["inference"] = inference_plan(law, flop, assume, serving, target, target_samples=samples, target_from=src,
                                    objective=req.objective, plan=plan)


def compare_inference(r: dict, law: Law, flop: FlopModel, assume, req: PlanRequest, inference_tokens: float) -> None:
    """Each famous plan served for the same T tokens, against the least-compute and the
    Chinchilla-optimal models of its own loss."""
    serving = Serving(inference_tokens, req.input_len, req.output_len)
    for row in r["compare"]:
        n, d = row["params"], row["tokens"]
        row["inference"] = inference_plan(law, flop, assume, serving, row["loss"],
                                          target_samples=law.loss(n, d, point=False)[:, 0], target_from="plan",
                                          objective=req.objective, plan=(n, d, flop.shape(row["params_target"])))


def _compare_record(req: PlanRequest, law: Law, flop: FlopModel, params, tokens) -> dict:
    """`--compare`: the famous models (and PLANS.toml's, and the plan's own size) on the frontier."""
    plans = list(FAMOUS) + (read_plans_toml(req.compare) if req.compare else [])
    if params is not None and tokens is not None:
        plans.append(("this plan", float(params), float(tokens)))
    return {"law": {**law.params, "source": law.source}, "flop_model": flop.describe(),
            "compare": compare_plans(law, flop, plans),
            "reach": _compare_reach(law, flop, plans),
            "warnings": flop.warnings + ([law.note] if law.note else []) + [
                "absolute losses belong to the data and tokenizer the law was fitted on; "
                "ratios and allocations are what transfer"]}


def _target_compute(req: PlanRequest, law: Law, flop: FlopModel) -> float:
    """--target-loss: the training compute of the Chinchilla-optimal model of that loss (the
    plan shown is that model)."""
    if not req.target_loss > law.params["E"]:
        raise UserError(f"--target-loss {req.target_loss:g} is not above the law's irreducible loss "
                        f"E = {law.params['E']:.4g}: no model reaches it")
    chin = least_compute(law, flop, req.target_loss, Serving(0.0, req.input_len, req.output_len))
    return float(chin["train"][0])


def task_at(law: Law, model: dict, planned_by: str) -> dict:
    """The fit's task chain at the plan's N and D (the compute-optimal model's without a plan):
    task loss and accuracy, each with the joint bootstrap's 95% interval. planned_by: "plan"
    (N and D given), "lm-loss" (the optimum of --fit's law, --task-fit's chain at it) or
    "task-loss" (the optimum of the task loss's own law: not the model one would train)."""
    # Here, not above: only a fit with a task chain needs it, and the fit is loaded already.
    from scaling.fit.tasklaw import predict_chain

    p = predict_chain(law.task, model["params"], model["tokens"])
    out = {"name": law.task["name"], "target": law.task["target"], "accuracy_column": law.task.get("accuracy"),
           "params": model["params"], "tokens": model["tokens"], "at": planned_by}
    for k in ("task_loss", "accuracy"):
        v, lo, hi = (float(p[k + s][0]) for s in ("", "_lower", "_upper"))
        out[k] = None if math.isnan(v) else v
        out[k + "_ci"] = None if math.isnan(lo) else [lo, hi]
    if out["accuracy"] is None:
        out["accuracy_refused"] = (law.task.get("step2") or {}).get("refused")
    return out


def _task_law(req: PlanRequest, law: Law) -> Law | None:
    """The law whose task chain the plan predicts: --task-fit's (the plan's N and D from --fit's
    law of the LM loss), else --fit's own where it has one."""
    if not req.task_fit:
        return law if law.task else None
    if law.task:
        raise UserError(f"--task-fit {req.task_fit}: --fit {req.fit} is itself a task law ({law.task['target']}); "
                        "--fit names the LM loss's law, which chooses N and D, and --task-fit the task's")
    t = Law.from_fit_file(req.task_fit)
    if not t.task:
        raise UserError(f"--task-fit {req.task_fit}: no task law in it (fit one with `scaling fit RESULTS --target "
                        "task.NAME.bpb --out FILE`)")
    return t


def build(req: PlanRequest) -> tuple[dict, Law, FlopModel, CostAssumptions]:
    """The plan record `scaling plan` prints, and the law, FLOP count and cost assumptions it
    used: the one path from a request to a plan (`scaling report --plan` takes it too)."""
    params, tokens, compute, inference_tokens = _counts(req)
    _check(req, params, tokens, compute)
    assume = assumptions(req)
    law = Law.from_fit_file(req.fit) if req.fit else Law.default()
    flop = plan_count(req, law)
    if req.compare is not None:
        r = _compare_record(req, law, flop, params, tokens)
        if inference_tokens is not None:
            compare_inference(r, law, flop, assume, req, inference_tokens)
        return r, law, flop, assume
    if req.target_loss is not None:
        compute = _target_compute(req, law, flop)
    r = make_plan(law, flop, assume, params=params, tokens=tokens, compute=compute)
    r["reach"] = law.reach(r.get("plan", {}).get("params") or r["optimal"]["params"], r["compute"])
    task_law = _task_law(req, law)
    if task_law is not None:
        at = "plan" if "plan" in r else "task-loss" if task_law is law else "lm-loss"
        r["task"] = task_at(task_law, r.get("plan") or r["optimal"], at)
    if inference_tokens is not None:
        add_inference(r, law, flop, assume, req, inference_tokens)
    return r, law, flop, assume
