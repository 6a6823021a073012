"""`scaling sweep extend`: the runs that move an IsoFLOP sweep's edge budgets, as a sweep file.

A budget whose lowest loss is at its smallest or largest size (found by the fit,
scaling/fit/edges.py) needs sizes beyond that edge. `extend` writes them as a sweep file that
`scaling sweep launch` takes as it is, into the SAME sweep directory:

- the same [sweep] name (launch refuses a directory that holds another sweep), its `out` the
  sweep directory, and the [train], [executor] and [slurm] of the sweep file last launched
  there (DIR/sweep.toml), so the new runs are trained as the old ones were, and the tasks
  they scored ([eval], from the runs' configs);
- [isoflop] with only the edge budgets, each with its own new sizes (`sizes` as one list per
  budget): the file expands to new runs only, with new names (C<budget>-N<size>), so launch's
  check that a run directory keeps its config is never in the way and every old run is left
  alone. `sweep collect` then gathers old and new runs (the ledger, DIR/sweep.json, holds
  both) and `fit` reads them all.

The sizes: the edge run's own size target times the budget's spacing (the geometric mean
ratio of neighbouring targets), one step further for each size to add; a target whose model
is no larger (or smaller) than the budget's edge model (small sizes share shapes) is stepped
past; a model too small to build, or too large for the budget to buy a batch, is tried half a
step back (the last model the budget allows may lie between), and then ends that side, named
in the notes. The file is checked by expanding it (`load_sweep`) before it is
written, atomically: nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from scaling.base.config import TrainConfig, format_count, parse_count, read_toml
from scaling.base.errors import UserError
from scaling.jobs.ledger import LEDGER, load_ledger
from scaling.sweep.spec import format_budget, load_sweep, model_stats

SWEEP_FILE = "sweep.toml"
MAX_TRIES = 8       # targets tried per size to add (shapes of small sizes repeat)


@dataclass
class Extension:
    """What `extend` wrote: the file, and per budget the sizes added (target, N)."""

    path: Path
    dir: Path
    added: dict = field(default_factory=dict)     # budget -> [(target, n_params, run name)]
    notes: list = field(default_factory=list)

    @property
    def runs(self) -> int:
        return sum(len(v) for v in self.added.values())


def _budget_runs(ledger, budget: float) -> tuple[float, list]:
    """The sweep's budget nearest `budget` (a fit of a table without its budget column names a
    budget by its runs' mean FLOPs: within 0.05 dex of the sweep's) and its runs."""
    budgets = {e.budget for e in ledger.runs.values() if e.budget is not None}
    near = min(budgets, key=lambda b: abs(math.log10(b / budget)), default=None)
    if near is None or abs(math.log10(near / budget)) > 0.05:
        raise UserError(f"{ledger.path}: no budget of this sweep is {format_budget(budget)} FLOPs "
                        f"(its budgets: {', '.join(format_budget(b) for b in sorted(budgets)) or 'none'}); "
                        "is this the sweep the fit was of?")
    return near, [e for e in ledger.runs.values() if e.budget == near]


def _spacing(entries: list) -> float:
    targets = sorted({e.config["params"] for e in entries}, key=lambda p: _target(p))
    xs = [math.log(_target(t)) for t in targets]
    return math.exp((xs[-1] - xs[0]) / (len(xs) - 1)) if len(xs) > 1 else 2.0


def _target(params) -> float:
    return float(parse_count(params))


def _round(x: float) -> int:
    k = 2 - int(math.floor(math.log10(x)))
    return int(round(x, k))


def _new_sizes(ledger, budget: float, side: str, count: int, vocab: int | None, notes: list) -> list[int]:
    """`count` size targets beyond the `side` edge of the budget's runs, each a model the
    budget's runs do not already hold, in order from the edge outwards."""
    budget, entries = _budget_runs(ledger, budget)
    sign = 1 if side == "largest" else -1
    edge = (max if sign > 0 else min)(entries, key=lambda e: e.n_params)
    step = _spacing(entries)
    cfg = TrainConfig.from_dict({k: v for k, v in edge.config.items() if k != "out"})
    beyond = edge.n_params
    out, x, tries = [], _target(edge.config["params"]), 0
    while len(out) < count and tries < MAX_TRIES * count:
        tries += 1
        x *= step ** sign
        n, why = _model_at(cfg, _round(x), budget, vocab)
        if n is None:
            # Half a step back: the smallest (or largest) model the budget allows may lie between.
            x /= step ** (sign / 2)
            n, _ = _model_at(cfg, _round(x), budget, vocab)
            if n is None or (n - beyond) * sign <= 0:
                notes.append(f"budget {format_budget(budget)}: nothing {'larger' if sign > 0 else 'smaller'} than "
                             f"N={format_count(beyond)} added after {len(out)} size(s): {why}")
                break
        if (n - beyond) * sign > 0:
            out.append(_round(x))
            beyond = n
    return out


def _model_at(cfg: TrainConfig, target: int, budget: float, vocab: int | None) -> tuple[int | None, str]:
    """(parameters of size `target`'s model, "") if the budget can train it, else (None, why)."""
    try:
        n, _, fpt = model_stats(replace(cfg, params=format_count(target)), vocab)
    except UserError as e:
        return None, str(e)
    if budget / fpt < cfg.tokens_per_step:
        return None, f"size {format_count(target)} would see less than one batch of tokens"
    return n, ""


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and abs(v) >= 1e6:
        return _exact_sci(v)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)    # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def _exact_sci(v: float) -> str:
    """1.6e13 -> '1.6e13': the shortest scientific form that reads back as the same float
    (a budget must stay exactly the budget its old runs were named and counted by)."""
    for digits in range(17):
        t = f"{v:.{digits}e}"
        if float(t) == v:
            break
    mant, exp = t.split("e")
    return f"{mant.rstrip('0').rstrip('.') if '.' in mant else mant}e{int(exp)}"


def to_toml(doc: dict, header: str = "") -> str:
    """A sweep file's sections (tables of values) as TOML text."""
    lines = [f"# {h}" for h in header.splitlines()]
    for name, table in doc.items():
        lines += ["", f"[{name}]"] + [f"{json.dumps(k) if not k.isidentifier() else k} = {_toml_value(v)}"
                                      for k, v in table.items()]
    return "\n".join(lines) + "\n"


def extend(dir: str | Path, edges, out: str | Path | None = None) -> Extension:
    """Write the sweep file that adds sizes beyond each edge of `edges` (objects with budget,
    side "smallest"/"largest" and add, the sizes to add: `scaling.fit.Fit.edges`) to the sweep
    in `dir`; out defaults to DIR/extend.toml. Returns what was written."""
    dir = Path(dir)
    ledger = load_ledger(dir)
    if ledger is None:
        raise UserError(f"{dir}: no {LEDGER}: not a sweep directory (`scaling sweep launch` makes one)")
    if ledger.kind != "isoflop":
        raise UserError(f"{dir}: holds a {ledger.kind} sweep; extend adds sizes to an IsoFLOP sweep's budgets "
                        "(a grid has no budgets to centre: launch an isoflop sweep)")
    doc = read_toml(dir / SWEEP_FILE, "sweep file")
    vocab = (doc.get("sweep") or {}).get("vocab_size")
    out = Path(out) if out is not None else dir / "extend.toml"
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; give the sweep file to write (e.g. {out / 'extend.toml'})")
    ext = Extension(out, dir)
    budgets, sizes = [], []
    for e in edges:
        budget = _budget_runs(ledger, float(e.budget))[0]
        new = _new_sizes(ledger, budget, e.side, len(e.add), vocab, ext.notes)
        if new:
            budgets.append(budget)
            sizes.append([format_count(t) for t in new])
    if not budgets:
        raise UserError(f"{dir}: no size can be added beyond the edges (a budget whose optimum lies below the "
                        "smallest model it can build needs a larger budget or a smaller vocabulary): "
                        + "; ".join(ext.notes))
    doc_out = sweep_doc(dir, ledger, doc, out, budgets, sizes, f"sizes beyond the edge budgets of {dir} (scaling sweep extend)")
    header = (f"Written by `scaling sweep extend {dir}`: new runs only, into the same sweep directory.\n"
              f"  scaling sweep launch {out}\n  scaling sweep collect {dir} && scaling fit {dir / 'results.parquet'}")
    write_checked(out, to_toml(doc_out, header), ledger, ext)
    return ext


def sweep_doc(dir: Path, ledger, doc: dict, out: Path, budgets: list, sizes: list, description: str) -> dict:
    """The sections of a sweep file that adds runs (`sizes[i]`, a list of size targets, at
    `budgets[i]`) to the sweep in `dir` (its ledger, and `doc` the sweep file launched there):
    the same [sweep] name and directory, its [train], [executor] and [slurm] (`extend`, and
    `scaling design`'s sweep file)."""
    iso = {"budgets": budgets, "sizes": sizes}
    if "steps" in (doc.get("isoflop") or {}):
        iso["steps"] = doc["isoflop"]["steps"]
    sweep = {k: v for k, v in (doc.get("sweep") or {}).items() if k in ("name", "kind", "vocab_size")}
    # Paths in a sweep file are read from its folder (spec.file_path): `out` is written relative
    # to the new file, and the data as the launch read it (the ledger's run configs), absolute.
    sweep |= {"name": ledger.sweep, "kind": "isoflop", "out": os.path.relpath(dir.absolute(), out.parent.absolute()),
              "description": description}
    new_doc = {"sweep": sweep, "isoflop": iso, **{k: doc[k] for k in ("train", "executor", "slurm") if k in doc}}
    for key, value in (new_doc.get("train") or {}).items():
        # A tuned table's folder was read from the launched file's folder, which the sweep
        # directory does not record: a relative one would be read from the wrong place here.
        if isinstance(value, dict) and isinstance(value.get("tuned"), str) and not os.path.isabs(value["tuned"]):
            raise UserError(f"{dir / 'sweep.toml'}: train.{key} = {{ tuned = {value['tuned']!r} }} is relative to the "
                            "file it was launched from; write it as an absolute path there, relaunch, then extend")
    data = next((r.config.get("data") for r in ledger.runs.values()), None)
    if "train" in new_doc and data not in (None, "", "default"):
        new_doc["train"] = {**new_doc["train"], "data": os.path.abspath(data)}
    # The tasks every run scores, as the launch recorded them (task files absolute): new runs
    # score the same ones, or their task columns would be null.
    tasks = next((r.config.get("eval") for r in ledger.runs.values() if r.config.get("eval")), None)
    if tasks:
        new_doc["eval"] = {"tasks": list(tasks)}
    return new_doc


def write_checked(out: Path, text: str, ledger, ext: Extension) -> None:
    """Expand the file before it is in place (a run it names must be new), then move it there."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    try:
        sweep = load_sweep(tmp)
        old = [r.name for r in sweep.runs if r.name in ledger.runs]
        if old:
            raise UserError(f"{out}: would name runs the sweep already has ({', '.join(old)})")
        for r in sweep.runs:
            ext.added.setdefault(r.budget, []).append((r.config.params, r.n_params, r.name))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
