"""One self-contained HTML document of a sweep: its runs, the fits with intervals and
warnings, the held-out check, the plan and its bill, and every figure, plotly.js embedded
once (it opens offline and can be sent to a colleague).

The report computes nothing of its own: the table is read by `scaling.fit.load_runs`, the fit
is fit.json (or `scaling.fit.fit_all` where there is none), the plan is `scaling plan`'s own
record (`scaling.plan.record.build`), and the text blocks are what those commands print
(`scaling.fit.text`, `scaling.plan.text`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from scaling import __version__, figures
from scaling.base.config import format_count
from scaling.base.errors import UserError
from scaling.base.rundir import atomic_write_bytes
from scaling.figures.page import figure_div, page
from scaling.fit import FitOptions, column_mapping, fit_all, find_curves, load_curves, load_runs
from scaling.fit import olmo
from scaling.fit.compare import Comparison
from scaling.fit.compare_text import format_comparison, shown_rows
from scaling.fit.report import read_fit_file
from scaling.fit.table import as_frame, read_any
from scaling.fit.text import below_law_line, format_fit, held_out_extremes
from scaling.plan.record import build
from scaling.plan.request import parse_plan_args
from scaling.plan.text import amount, format_all

RESULTS = "results.parquet"
FIT = "fit.json"


@dataclass
class Inputs:
    """What a report (or one `scaling plot`) is drawn from."""

    results: Path
    table: object                    # scaling.fit.table.RunTable
    curves: object | None            # polars DataFrame of loss curves, or None
    fit: dict
    fit_source: str                  # the fit.json read, or how it was fitted here
    plan: dict | None = None         # `scaling plan`'s record for --plan ARGS
    compare: dict | None = None      # the same law's `--compare` record (famous models)
    law: object | None = None        # scaling.plan.training.Law of the plan
    flop: object | None = None       # scaling.plan.training.FlopModel of the plan
    assume: object | None = None     # scaling.base.cost.CostAssumptions
    plan_args: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    raw: object | None = None        # the runs as read, where not the file `results` (an OLMo ladder folder)
    recipes: Comparison | None = None  # `--compare-with`: this sweep against others (scaling.compare)


def find_results(source: str | Path) -> Path:
    """A sweep directory (its results.parquet) or a results table itself."""
    p = Path(source)
    if p.is_dir():
        if not (p / RESULTS).exists():
            # Point at `sweep collect` only where there is a sweep to collect.
            how = (f"write it with `scaling sweep collect {p}`" if (p / "sweep.json").exists() else
                   "not a sweep either: give a sweep directory, a results table (.csv, .parquet) or a folder of "
                   "OLMo ladder runs (SIZE-MxC.csv)")
            raise UserError(f"{p}: no {RESULTS} in this directory ({how})")
        return p / RESULTS
    if not p.exists():
        raise UserError(f"{p}: no such sweep directory or results table")
    return p


def read_fit(path: str | Path) -> dict:
    """A fit.json, checked enough that the report can read it."""
    p = Path(path)
    fit = read_fit_file(p)
    if not any(isinstance(fit.get(f"approach{k}"), dict) for k in (1, 2, 3)):
        raise UserError(f"{p}: not a fit file from `scaling fit --out` (no approach1, approach2 or approach3)")
    for key in ("n_runs", "params_column", "range"):
        if key not in fit:
            raise UserError(f"{p}: fit file lacks {key!r}; rewrite it with `scaling fit RESULTS --out {p}`")
    return fit


def load(source: str | Path, fit_path: str | Path | None = None, plan_args: list | None = None,
         columns: dict | str | None = None, bootstrap: int = 200) -> Inputs:
    """Read a sweep's results (and curves), its fit and, with plan_args (`scaling plan`'s
    arguments), the plan. Without fit.json (given, or beside the results) the runs are
    fitted here with `fit_all`, as `scaling fit` would with --bootstrap `bootstrap`. columns:
    the column mapping, a dict {"params": "N"} or the string "params=N" (as `scaling.fit`)."""
    # A folder of OLMo ladder runs is read as its results and curves (scaling/fit/olmo.py), as `scaling fit` reads it.
    ladder = olmo.read_ladder(source) if olmo.is_ladder(source) else None
    results = Path(source) if ladder else find_results(source)
    notes: list[str] = []
    if fit_path is None and (results.parent / FIT).exists() and not ladder:
        fit_path = results.parent / FIT
    fit = read_fit(fit_path) if fit_path is not None else None
    cols = column_mapping(columns)
    if fit is not None and "params" not in cols and fit["params_column"] != "params":
        cols["params"] = fit["params_column"]   # read N as the fit did (e.g. params_nonembed)
    target = (fit or {}).get("target")
    if target and "loss" not in cols:
        cols["loss"] = target       # a fit of a task's loss (`scaling fit --target`): its runs read the same column
    table = load_runs(ladder[0] if ladder else results, cols)
    table.source = str(results)
    cpath = ladder[1] if ladder else find_curves(results, None)
    curves = load_curves(_on_target(cpath, target), table) if cpath is not None else None
    if fit is None:
        fit = fit_all(table, curves, FitOptions(n_boot=bootstrap, progress=False))
        fit_source = f"fitted here: `scaling fit {results}` with {bootstrap} bootstrap resamples (no {FIT} found)"
    else:
        fit_source = str(fit_path)
        if fit["n_runs"] != table.df.height:
            notes.append(f"{fit_path} was fitted on {fit['n_runs']} runs; {results} now holds "
                         f"{table.df.height} usable runs (refit with `scaling fit`)")
    inp = Inputs(results, table, curves, fit, fit_source, plan_args=list(plan_args or []), notes=notes,
                 raw=ladder[0] if ladder else None)
    if plan_args is not None:
        add_plan(inp, list(plan_args))
    return inp


def _on_target(curves, target: str | None):
    """The curves (a path or a DataFrame) with the fit's target as their loss (as given without a target)."""
    if not target:
        return curves
    c, where = as_frame(curves)
    if target not in c.columns:
        raise UserError(f"{where}: no column {target!r}, which the fit's target names")
    return c.drop([k for k in ("loss",) if k in c.columns]).with_columns(c[target].alias("loss"))


def add_plan(inp: Inputs, argv: list[str]) -> None:
    """The plan of `scaling plan ARGV`, and the famous models compared under the same law."""
    if not argv:
        raise UserError("--plan: give `scaling plan`'s arguments after it, e.g. --plan --params 20B --tokens 1T")
    req = parse_plan_args(argv, "scaling report --plan")
    inp.plan, inp.law, inp.flop, inp.assume = build(req)
    if "compare" in inp.plan:
        inp.compare, inp.plan = inp.plan, None
    else:
        more = dataclasses.replace(req, compare="", inference_tokens=None, target_loss=None)
        if req.target_loss is not None or req.compute is not None:
            more = dataclasses.replace(more, params=None, tokens=None)   # the famous models alone
        inp.compare = build(more)[0]


# ----------------------------------------------------------------------------- figures

ENCDEC_FRONTIER = ("Under the encoder-decoder FLOP count the frontier bends where the FLOPs per parameter change "
                   "(attention over the window and the LM head weigh more in small models): compute is counted by "
                   "the trend of the formula over the shapes the size rule builds (scaling/base/flops.py), so the "
                   "optimal N moves smoothly with compute. Under 6ND (`--flops 6nd`) the same law's frontier is a "
                   "straight line.")


def _plan_for_frontier(inp: Inputs) -> dict | None:
    return inp.plan if inp.plan and "plan" in inp.plan else None


def _cost(inp: Inputs):
    return figures.plan_cost(inp.plan or {}, inp.law, inp.flop)


def _famous(inp: Inputs):
    if inp.compare is None:
        return None
    return figures.famous(inp.compare, inp.law, inp.flop, plan=inp.plan)


def _builders() -> dict[str, tuple[str, Callable, Callable]]:
    """KIND -> (title, figure of the inputs, caption of the inputs)."""
    def a(k):
        return lambda i: f"approach{k}" in i.fit

    return {
        "curves": ("Loss curves and Approach 1's envelope",
                   lambda i: figures.loss_curves(i.table, i.curves, i.fit),
                   lambda i: "Every run's validation loss against its training FLOPs, coloured by size N. Approach 1 "
                             "takes at each compute the lowest loss any run reached (black points: the stretches of "
                             "the envelope it fitted, leaving out those won by the smallest or largest size, where "
                             "the optimum may lie beyond the sizes tried)." + (
                                 "" if i.curves is not None else " No curves.parquet: final points only.")),
        "isoflop": ("IsoFLOP profiles (Approach 2)", lambda i: figures.isoflop_profiles(i.fit, i.table),
                    lambda i: ("Final loss against N (left) and D (right) at each FLOP budget, the parabola the "
                               f"profile minimum was read from ({i.fit['approach2'].get('profile_method', 'local')}) "
                               "and its minimum (x). " if "approach2" in i.fit else
                               "Final loss against N (left) and D (right) at each FLOP budget; the fit has no "
                               "approach 2, so no parabola or minimum is drawn. ")
                    + "A budget whose lowest run is at an edge of its sizes is refused, never extrapolated: that "
                      "run is ringed, and `scaling sweep extend` writes the sizes to add beyond it."),
        "frontier": ("The compute-optimal frontier N_opt(C), D_opt(C)",
                     lambda i: figures.frontier(i.fit, i.table, _plan_for_frontier(i)),
                     lambda i: "Points read off the runs by Approaches 1 (envelope) and 2 (IsoFLOP minima); the power "
                               "laws of the three approaches with their 95% bootstrap bands, extrapolated to the "
                               "plan's compute; the plan (star) and the compute-optimal model of its compute "
                               "(diamond; counted by the plan's FLOP model: "
                               + (i.flop.describe() if i.flop else "no plan") + "); Chinchilla's and Kaplan's "
                               "published laws (C = 6ND) for reference."),
        "contours": ("Approach 3: L(N, D) on the N-D plane", lambda i: figures.contours(i.fit, i.table),
                     lambda i: "Iso-loss contours of the fitted law, its efficient frontier under the runs' own FLOP "
                               "count, the IsoFLOP lines of the sweep's budgets and the runs (Chinchilla's Figure 4)."),
        "residuals": ("Fit diagnostics: residuals", lambda i: figures.residuals(i.fit, i.table),
                      lambda i: "Approach 3's relative residuals against N (by budget) and C (by size): a law that "
                                "fits leaves no trend in either."),
        "task": ("The two-step task law", lambda i: figures.task_steps(i.fit),
                 lambda i: f"Step 1 (left): the task loss of every run's final row against its tokens, and the law "
                           f"L(N, D) fitted to them, one dashed curve per size. Step 2 (right): accuracy against task "
                           f"loss at the runs' validation points, the sigmoid with floor and ceiling fitted to them "
                           f"and its 95% band from the bootstrap through both steps (docs/task-laws.md)."),
        "heldout": ("Held-out check", lambda i: figures.heldout(i.fit, i.table),
                    lambda i: "Approach 3 refitted without the largest budget predicts the runs it did not see "
                              "(coloured) and the runs it saw (grey); on the diagonal, predicted exactly."),
        "famous": ("Famous models on the frontier", _famous,
                   lambda i: f"Under the plan's law ({i.law.source}): iso-loss contours, the efficient frontier "
                             f"({i.flop.describe()}) and GPT-3, MT-NLG, PaLM, Chinchilla, AlexaTM and the plan. "
                             + (ENCDEC_FRONTIER if i.flop.kind == "encdec" else "") if i.law else ""),
        "cost": ("Training + inference cost at the target loss", _cost,
                 lambda i: "Along the iso-loss curve of the plan's loss: a smaller N needs more tokens but serves "
                           "cheaper. The least total compute, the Chinchilla-optimal N (least training compute) "
                           "and the plan's N are marked (Sardana et al. 2023)."),
    }


KINDS = ("curves", "isoflop", "frontier", "contours", "residuals", "task", "heldout", "famous", "cost")


def check_kind(kind: str) -> str:
    """`kind` if it names a figure (KINDS), else a UserError listing them."""
    if kind not in KINDS:
        raise UserError(f"unknown plot kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


NEEDS = {"contours": "approach 3 in the fit", "residuals": "approach 3 in the fit",
         "heldout": "a held-out check in the fit (3 or more budgets, and no --no-holdout)",
         "famous": "a plan: give --plan ARGS (`scaling plan`'s arguments)",
         "cost": "--inference-tokens in the plan's arguments",
         "task": "a task law in the fit (`scaling fit --target task.NAME.bpb --out fit.json`)"}


def _why_not(inp: Inputs, kind: str) -> str:
    """Why a figure the inputs do not allow is not drawn, in words: what it needs, and for
    an approach the fit skipped, the fit's own reason."""
    if kind in ("famous", "cost") and inp.plan is None and inp.compare is None:
        return "it draws a plan: give --plan ARGS (`scaling plan`'s arguments)"
    why = f"it needs {NEEDS.get(kind, 'more data')}"
    if kind in ("contours", "residuals"):
        said = [w for w in inp.fit.get("warnings") or [] if w.startswith("approach 3:")]
        why += f" ({said[0]})" if said else ""
    return why


def figure(inp: Inputs, kind: str):
    """One figure of the inputs, or a UserError saying what it needs."""
    title, draw, _ = _builders()[check_kind(kind)]
    if kind in ("famous", "cost") and inp.plan is None and inp.compare is None:
        raise UserError(f"plot {kind} draws a plan: give --plan ARGS (`scaling plan`'s arguments)")
    fig = draw(inp)
    if fig is None:
        raise UserError(f"plot {kind}: nothing to draw for {inp.results}: {_why_not(inp, kind)}")
    return fig


def all_figures(inp: Inputs) -> list[tuple[str, str, str, object, str | None]]:
    """(kind, title, caption, figure or None, why not drawn or None) of every figure, in
    reading order: the report shows a figure, or in its place why it is not there."""
    out = []
    for kind, (title, draw, caption) in _builders().items():
        try:
            fig = draw(inp)
        except UserError as e:   # one figure that cannot be drawn must not take the report down
            fig, why = None, str(e)
        else:
            why = None if fig is not None else _why_not(inp, kind)
        out.append((kind, title, caption(inp) if fig is not None else "", fig, why))
    return out


def figures_of(inp: Inputs) -> list[tuple[str, str, str, object]]:
    """(kind, title, caption, figure) of every figure the inputs allow, in reading order."""
    return [(k, t, c, f) for k, t, c, f, _ in all_figures(inp) if f is not None]


# ----------------------------------------------------------------------------- the page

def _e(v) -> str:
    return html.escape(str(v))


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-3)):
        return f"{v:.3g}"
    return f"{v:.{digits}g}" if isinstance(v, float) else _e(v)


def _ci(ci) -> str:
    if not ci or ci[0] is None:
        return ""
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


def _table(head: list[str], rows: list[list], left: int = 1, cls: str = "") -> str:
    th = "".join(f"<th class='{'l' if j < left else ''}'>{_e(h)}</th>" for j, h in enumerate(head))
    trs = ["<tr>" + "".join(f"<td class='{'l' if j < left else ''}'>{c}</td>" for j, c in enumerate(r)) + "</tr>"
           for r in rows]
    return f"<table class='{cls}'><tr>{th}</tr>{''.join(trs)}</table>"


def runs_section(inp: Inputs) -> str:
    """The runs table of the report: every row of the results file, the unfitted ones marked."""
    raw = inp.raw if inp.raw is not None else read_any(inp.results)
    cols = [c for c in ("run", "params", "params_nonembed", "tokens", "flops", "budget", "loss", "loss_se", "status",
                        "wall_time_s") if c in raw.columns]
    used = set(inp.table.df["run"].to_list()) if "run" in raw.columns else set()

    def cell(c, v):
        if v is None:
            return "-"
        if c in ("params", "params_nonembed", "tokens"):
            return format_count(float(v))
        if c in ("flops", "budget"):
            return f"{float(v):.3g}"
        if c in ("loss", "loss_se"):
            return f"{float(v):.4f}"
        if c == "wall_time_s":
            return f"{float(v):.0f}"
        return _e(v)

    rows = [[cell(c, r.get(c)) for c in cols] + (["yes" if r.get("run") in used else "no"] if used else [])
            for r in raw.iter_rows(named=True)]
    n_col = inp.fit.get("params_column", "params")
    return (f"<h2 id='runs'>Runs</h2><p>{raw.height} rows in <code>{_e(inp.results)}</code>; "
            f"{inp.table.df.height} completed runs with finite values are fitted (N from column "
            f"<code>{_e(n_col)}</code>).</p><div class='scroll'>"
            + _table(cols + (["fitted"] if used else []), rows, left=1) + "</div>")


def fits_section(inp: Inputs) -> str:
    """The fits of the report: each approach's numbers with intervals, then `scaling fit`'s text."""
    fit = inp.fit
    rows = []
    for k in (1, 2, 3):
        r = fit.get(f"approach{k}")
        if not r:
            rows.append([f"approach {k}", "not fitted", "", "", "", ""])
            continue
        pts = {1: f"{r['n_points']} runs" + ("" if r.get("from_curves") else " (final points)"),
               2: f"{r.get('n_budgets', '?')} budgets", 3: f"{r['n_points']} runs"}[k]
        rows.append([f"approach {k}", _num(r["a"]), _ci(r["ci"].get("a")), _num(r["b"]), _ci(r["ci"].get("b")), pts])
    out = [f"<h2 id='fits'>Fits</h2><p>From {_e(inp.fit_source)}; {fit.get('bootstrap', 0)} bootstrap resamples "
           f"(seed {fit.get('seed', 0)}), 95% percentile intervals.</p>",
           "<h3>Compute-optimal allocation: N_opt ∝ C^a, D_opt ∝ C^b</h3>",
           _table(["approach", "a", "95% interval", "b", "95% interval", "points"], rows)]
    a3 = fit.get("approach3")
    if a3:
        keys = [("E", "E"), ("A", "A"), ("B", "B"), ("alpha", "alpha"), ("beta", "beta"), ("a", "a"), ("b", "b"),
                ("G", "G"), ("tokens_per_param", f"D/N at {a3.get('c_ref', 0):.3g} FLOPs")]
        out += ["<h3>Approach 3: L(N, D) = E + A/N^alpha + B/D^beta</h3>",
                _table(["parameter", "value", "95% interval"],
                       [[_e(label), _num(a3.get(k), 6), _ci(a3.get("ci", {}).get(k))] for k, label in keys])]
        if a3.get("degenerate"):
            out.append(f"<p class='warn'>The law is degenerate on these runs: {_e(a3['degenerate'])}; "
                       f"{a3.get('bootstrap_degenerate', 0)} of {fit.get('bootstrap', 0)} bootstrap fits too. "
                       "Read it as a curve fit, not a law.</p>")
    warns = list(fit.get("warnings", [])) + [w for k in (1, 2, 3) for w in fit.get(f"approach{k}", {}).get("warnings", [])]
    warns += inp.notes
    if warns:
        out.append("<h3>Warnings</h3><ul>" + "".join(f"<li class='warn'>{_e(w)}</li>" for w in warns) + "</ul>")
    out.append(f"<details><summary>What <code>scaling fit</code> prints for this fit</summary>"
               f"<pre>{_e(format_fit(fit))}</pre></details>")
    return "\n".join(out)


def heldout_section(inp: Inputs) -> str:
    """The held-out check of the report, in the sentences `scaling fit` prints."""
    hb = inp.fit.get("holdout_budget")
    if not hb:
        return ("<h2 id='heldout'>Held-out check</h2><p>None in this fit: it needs 3 or more budgets "
                "(and `scaling fit` without --no-holdout).</p>")
    out = [f"<h2 id='heldout'>Held-out check</h2><p>Fitted without the largest budget ({hb['budget']:.3g} FLOPs, "
           f"{hb['n_runs']} runs), {hb['extrapolation']:.2f}x the compute of the largest budget fitted.</p><ul>"]
    h3 = hb.get("approach3")
    if h3:
        best, worst = held_out_extremes(h3)
        out.append(f"<li>Approach 3 predicts its runs' loss to <b>{100 * h3['mean_abs_rel_error']:.2f}%</b> on "
                   f"average (max {100 * h3['max_abs_rel_error']:.2f}%); its lowest loss, {_e(best['run'])}: "
                   f"{best['loss']:.4f}, predicted {best['predicted']:.4f}"
                   + ("" if worst is best else f"; its worst prediction, {_e(worst['run'])}: {worst['loss']:.4f}, "
                                               f"predicted {worst['predicted']:.4f}")
                   + (f" (the law fitted without it is degenerate: {_e(h3['degenerate'])})" if h3.get("degenerate") else "")
                   + ".</li>")
    h2 = hb.get("approach2")
    if h2 and h2.get("rel_error") is not None:
        out.append(f"<li>Approach 2 (a = {h2['a']:.3f}) predicts N_opt {h2['N_opt_predicted']:.3g} against "
                   f"{h2['N_opt_observed']:.3g} observed ({100 * h2['rel_error']:+.1f}%).</li>")
    out += [f"<li class='warn'>{_e(w)}</li>" for w in hb.get("warnings", [])]
    if h3 and h3.get("below_law"):
        out.append(f"<li class='warn'>{_e(below_law_line(h3['below_law']))}</li>")
    out.append("</ul>")
    if h3:
        out.append(_table(["run", "N", "D", "loss", "predicted", "error"],
                          [[_e(r["run"]), f"{r['params']:.3g}", f"{r['tokens']:.3g}", f"{r['loss']:.4f}",
                            f"{r['predicted']:.4f}", f"{100 * r['rel_error']:+.2f}%"] for r in h3["runs"]]))
    return "\n".join(out)


def plan_section(inp: Inputs) -> str:
    """The plan of the report (`scaling plan`'s text), or how to ask for one."""
    if inp.plan is None and inp.compare is None:
        return ("<h2 id='plan'>Plan</h2><p>No plan in this report: give <code>--plan</code> and "
                "<code>scaling plan</code>'s arguments, e.g. <code>--plan --params 20B --tokens 1T</code>.</p>")
    out = [f"<h2 id='plan'>Plan: <code>scaling plan {_e(' '.join(inp.plan_args))}</code></h2>"]
    r = inp.plan
    if r is not None:
        p, o = r.get("plan"), r["optimal"]
        rows = []
        if p:
            rows.append(["the plan", f"{p['params']:.4g}", f"{p['tokens']:.4g}", f"{p['tokens_per_param']:.1f}",
                         f"{r['compute']:.4g}", f"{p['loss']:.4f} {_ci(p.get('loss_ci'))}"])
        rows.append(["compute-optimal, same compute", f"{o['params']:.4g} {_ci(o.get('params_ci'))}",
                     f"{o['tokens']:.4g} {_ci(o.get('tokens_ci'))}", f"{o['tokens_per_param']:.1f}",
                     f"{r['compute']:.4g}", f"{o['loss']:.4f} {_ci(o.get('loss_ci'))}"])
        out += [f"<p>Law: {_e(r['law']['source'])}; compute counted by {_e(r['flop_model'])}.</p>",
                _table(["model", "N", "D", "D/N", "FLOPs", "predicted loss [95%]"], rows),
                "<h3>The bill</h3>",
                _table(["GPU", "GPU-hours", "GPU-days", "energy kWh", "CO2 kg", "USD"],
                       [[g, amount(b['gpu_hours']), amount(b['gpu_days']), amount(b['energy_kwh']),
                         amount(b['co2_kg']), amount(b['usd'])] for g, b in r["cost"].items()]),
                f"<p>Assumptions: {_e(inp.assume.describe())}.</p>"]
        if r.get("task"):
            t = r["task"]
            acc = (f"{t['accuracy']:.4f} {_ci(t.get('accuracy_ci'))}" if t.get("accuracy") is not None
                   else f"- (step 2 not fitted: {t.get('accuracy_refused')})")
            out += [f"<h3>Task {_e(t['name'])}: the two-step law at the plan</h3>",
                    _table(["N", "D", "task loss [95%]", "accuracy [95%]"],
                           [[f"{t['params']:.4g}", f"{t['tokens']:.4g}",
                             f"{t['task_loss']:.4f} {_ci(t.get('task_loss_ci'))}", _e(acc)]])]
        out += [f"<p class='warn'>{_e(w)}</p>" for w in r.get("warnings", [])]
        out.append(f"<details open><summary>What <code>scaling plan</code> prints</summary>"
                   f"<pre>{_e(format_all(r, inp.assume))}</pre></details>")
    if inp.compare is not None:
        out.append(f"<details><summary>Famous models under the same law (<code>scaling plan --compare</code>)</summary>"
                   f"<pre>{_e(format_all(inp.compare, inp.assume))}</pre></details>")
    return "\n".join(out)


def comparison_section(cmp: Comparison) -> str:
    """Recipes compared (`scaling compare`, `scaling report --compare-with`): k(C) with its
    interval and verdict at the ends and middle of the runs' range (and the plan's compute), the
    figure of frontiers and k(C), and the text `scaling compare` prints."""
    r = cmp.record
    picks = shown_rows(r)
    rows = [[_e(x["recipe"]), f"{x['compute']:.3g}", _num(x["k"]), _ci([x["k_lower"], x["k_upper"]]),
             f"{x['params_ratio']:.3g} {_ci([x['params_ratio_lower'], x['params_ratio_upper']])}",
             f"{x['tokens_ratio']:.3g} {_ci([x['tokens_ratio_lower'], x['tokens_ratio_upper']])}", _e(x["verdict"])]
            for x in r["rows"] if x["recipe"] != r["reference"] and x["compute"] in picks]
    runs = {rc.name: (rc.fit.table.col("flops"), rc.fit.table.col("loss")) for rc in cmp.recipes}
    fig = figures.comparison(r, runs)
    return "\n".join([
        f"<h2 id='recipes'>Recipes compared on {_e(r['metric'])}</h2><p>Each sweep's law fitted on "
        f"<code>{_e(r['metric'])}</code>; k(C) is the compute a recipe needs to reach {_e(r['reference'])}'s "
        f"compute-optimal value at C (k &gt; 1: {_e(r['reference'])} ahead), with a 95% interval from "
        f"{r['bootstrap']} bootstrap resamples of each sweep's runs; an interval that holds 1 is no difference.</p>",
        _table(["recipe", "compute C", "k", "95% interval", "N_opt ratio", "D_opt ratio", "verdict"], rows),
        f"<div class='figure'>{figure_div(fig, 'fig-recipes-plot')}</div>",
        "<p class='caption'>Left: each recipe's compute-optimal frontier with its 95% band and its runs; right: "
        "k(C) with its band. Dashed: beyond the runs' compute.</p>",
        f"<details open><summary>What <code>scaling compare</code> prints</summary>"
        f"<pre>{_e(format_comparison(r))}</pre></details>"])


def render(inp: Inputs) -> str:
    """The report as one HTML string."""
    by_kind = {k: (t, c, f, why) for k, t, c, f, why in all_figures(inp)}

    def fig_block(kind: str) -> str:
        t, c, f, why = by_kind[kind]
        if f is None:   # never dropped silently: its place says why it is not drawn
            return f"<h3 id='fig-{kind}'>{_e(t)}</h3><p class='warn not-drawn'>Not drawn: {_e(why)}.</p>"
        return (f"<h3 id='fig-{kind}'>{_e(t)}</h3><div class='figure'>{figure_div(f, f'fig-{kind}-plot')}</div>"
                f"<p class='caption'>{_e(c)}</p>")

    title = f"Scaling report: {inp.results}"
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = (("runs", "runs"), ("fits", "fits"), ("figures", "figures"), ("heldout", "held-out check"), ("plan", "plan"))
    parts += (("recipes", "recipes compared"),) if inp.recipes is not None else ()
    toc = " · ".join(f"<a href='#{a}'>{b}</a>" for a, b in parts)
    body = [f"<h1>{_e(title)}</h1><p>Written {stamp} by scaling {__version__}: "
            f"<code>scaling report</code>. {toc}</p>",
            runs_section(inp), fits_section(inp),
            "<h2 id='figures'>Figures</h2><p>Hover over a point for its run: name, N, D, C and loss.</p>",
            *(fig_block(k) for k in ("curves", "isoflop", "frontier", "contours", "residuals")
              + (("task",) if inp.fit.get("task") else ())),
            heldout_section(inp), fig_block("heldout"),
            plan_section(inp), fig_block("famous"), fig_block("cost")]
    if inp.recipes is not None:
        body.append(comparison_section(inp.recipes))
    return page(title, "\n".join(body))


def write(inp: Inputs, out: str | Path) -> Path:
    """The report written to `out`, atomically."""
    out = Path(out)
    atomic_write_bytes(out, render(inp).encode())
    return out
