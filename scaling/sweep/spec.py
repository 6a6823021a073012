"""Sweep files: a few numbers in TOML that expand to a list of runs.

Two kinds of sweep, as in Chinchilla and the OLMo ladder:

- ``grid``: sizes x token budgets, the budgets given as token counts ("20M") or as
  tokens-per-parameter multiples ("20x", or "1xC" = 20 tokens/param, OLMo's notation).
- ``isoflop``: FLOP budgets, and for each budget k sizes spread log-uniformly around a guessed
  optimum; each run's tokens are the budget divided by the model's own training FLOPs per
  token (`ModelConfig.flops_per_token`, which counts attention and the LM head), not 6ND.

Everything is validated before anything runs: an unknown key, a wrong type or an impossible
budget raises UserError naming the file, the key and the reason. See README (cli-sweep) for
the full format. The `[executor]` and `[slurm]` sections are read here into the jobs layer's
`Resources` and `SlurmSettings` (jobs/executors.py), which a launch hands to submitit.
"""

from __future__ import annotations

import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from scaling.base.config import TrainConfig, format_count, parse_count, read_toml
from scaling.base.errors import UserError
from scaling.data.tasks import checked_eval_list
from scaling.jobs.executors import EXECUTORS, SBATCH_OPTIONS, Resources, SlurmSettings
from scaling.sweep import resources as by_size
from scaling.sweep.placement import Placement, place
from scaling.sweep.branches import branch_runs
from scaling.sweep.sizes import model_for
from scaling.tuning.rules import resolve

KINDS = ("grid", "isoflop")
CHINCHILLA_TOKENS_PER_PARAM = 20.0

# Settings a sweep may not set in [train]: the expansion owns them.
_OWNED = {"params", "tokens", "out", "extra", "devices", "num_nodes", "eval", "branch_from", "branch_steps"}


# ------------------------------------------------------------------ schema helpers
class _Section:
    """Typed access to one TOML table: every read is checked and recorded, so keys that
    were never read are reported as unknown at the end."""

    def __init__(self, path: Path, name: str, table: Any):
        if not isinstance(table, dict):
            raise UserError(f"{path}: [{name}] must be a table, got {type(table).__name__}")
        self.path, self.name, self.table, self.read = path, name, table, set()

    def where(self, key: str) -> str:
        return f"{self.path}: {self.name}.{key}"

    def get(self, key: str, kinds: tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.read.add(key)
        if key not in self.table:
            if required:
                raise UserError(f"{self.path}: [{self.name}] needs '{key}'")
            return default
        value = self.table[key]
        # TOML integers are fine where floats are wanted; bools are not numbers here.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            want = " or ".join(_type_name(k) for k in kinds)
            raise UserError(f"{self.where(key)} must be {want}, got {value!r}")
        return value

    def get_list(self, key: str, kinds: tuple[type, ...], required: bool = False) -> list | None:
        value = self.get(key, (list,), required=required)
        if value is None:
            return None
        if not value:
            raise UserError(f"{self.where(key)} must not be empty")
        for i, v in enumerate(value):
            if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
                want = " or ".join(_type_name(k) for k in kinds)
                raise UserError(f"{self.where(key)}[{i}] must be {want}, got {v!r}")
        return value

    def finish(self, also_known: Iterable[str] = (), set_elsewhere: Iterable[str] = ()) -> None:
        """Refuse keys never read. `also_known`: keys the section accepts but reads only when
        present (so a typo's list of known keys names them too); `set_elsewhere`: keys a typo may
        be aiming at that this section does not take (the hint says so)."""
        unknown = sorted(set(self.table) - self.read)
        if unknown:
            known = sorted(self.read | set(also_known))
            elsewhere = set(set_elsewhere)
            near = difflib.get_close_matches(unknown[0], known + sorted(elsewhere), n=1)
            hint = ""
            if near:
                hint = (f"'{near[0]}' is set by the sweep itself, not in [{self.name}]; " if near[0] in elsewhere
                        else f"did you mean '{near[0]}'? ")
            raise UserError(f"{self.path}: [{self.name}] unknown key '{unknown[0]}' ({hint}known: {', '.join(known)})")


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false",
            list: "a list", dict: "a table"}.get(t, t.__name__)


def _count(where: str, value: Any) -> int:
    try:
        return parse_count(value, where)
    except UserError as e:
        raise UserError(str(e)) from None


def _flops(where: str, value: Any) -> float:
    """A FLOP budget: 1e18, "1e18", "3e17"."""
    try:
        c = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        c = math.nan
    if not math.isfinite(c) or c <= 0:
        raise UserError(f"{where}: FLOP budget must be a positive number like 1e18, got {value!r}")
    return c


def _multiple(where: str, value: Any) -> float:
    """Tokens per parameter: 20, "20x", or "1xC" (multiples of Chinchilla's 20)."""
    s = str(value).strip()
    scale = 1.0
    if isinstance(value, str):
        low = s.lower()
        if low.endswith("xc"):
            s, scale = s[:-2], CHINCHILLA_TOKENS_PER_PARAM
        elif low.endswith("x"):
            s = s[:-1]
    try:
        m = float(s) * scale
    except ValueError:
        m = math.nan
    if isinstance(value, bool) or not math.isfinite(m) or m <= 0:
        raise UserError(f"{where}: tokens per parameter must look like 20, \"20x\" or \"1xC\", got {value!r}")
    return m


def _show(raw: Any) -> str:
    return format_budget(raw) if isinstance(raw, float) else repr(raw)


def format_budget(c: float) -> str:
    """3e+17 -> '3e17', 1.5e18 -> '1.5e18': short and safe in a directory name."""
    mant, exp = f"{c:.3g}".split("e") if "e" in f"{c:.3g}" else (f"{c:.3g}", "0")
    return f"{mant}e{int(exp)}"


def _round_sig(x: float, sig: int = 3) -> int:
    if x <= 0:
        return 0
    k = sig - 1 - int(math.floor(math.log10(x)))
    return int(round(x, k))


# --------------------------------------------------------------------- the result
@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, with the accounting `plan` shows."""

    name: str
    config: TrainConfig
    n_params: int
    n_params_nonembed: int
    flops_per_token: float
    budget: float | None = None  # the sweep's FLOP budget (IsoFLOP), None for a grid
    sources: tuple = ()          # (("lr", "tuned 300K (trial 3)"), ...): where a value came from
    resources: Resources | None = None   # its own, where [executor] / [slurm] give keys by size
    slurm: SlurmSettings | None = None
    placement: Placement | None = None   # its strategy and micro-batch on its GPUs, and their memory
    trunk: str | None = None     # a branch ([sweep] branches): its trunk's run name (branches.py)
    branch_step: int | None = None   # ... and the trunk's step its cooldown starts from

    @property
    def tokens(self) -> int:
        return self.config.tokens

    @property
    def flops(self) -> float:
        return self.tokens * self.flops_per_token

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.n_params


@dataclass(frozen=True)
class Sweep:
    name: str
    kind: str
    path: Path
    out: Path
    runs: list[RunSpec]
    resources: Resources
    slurm: SlurmSettings
    notes: list[str] = field(default_factory=list)  # things plan should mention
    vocab_size: int | None = None                   # as stated in the file ([sweep] vocab_size)
    warnings: list[str] = field(default_factory=list)  # paths read as before the file-relative rule
    branches: bool = False                          # [sweep] branches: trunks and branches (branches.py)

    def resources_of(self, r: RunSpec) -> Resources:
        return r.resources or self.resources

    def slurm_of(self, r: RunSpec) -> SlurmSettings:
        return r.slurm or self.slurm

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)


# ------------------------------------------------------------------- model sizes
@lru_cache(maxsize=4096)
def _model(params: str, tied: bool, seq_len: int, data: str | None, vocab: int | None, arch: str = "encdec"):
    """The model the trainer will build for this size (cached: the size rule searches shapes)."""
    return model_for(params, tied_embeddings=tied, seq_len=seq_len, data=data, stated_vocab=vocab, arch=arch)


def model_stats(cfg: TrainConfig, vocab: int | None = None) -> tuple[int, int, float]:
    """(n_params, n_params non-embedding, training FLOPs per source token) of a run."""
    m = _model(cfg.params, cfg.tied_embeddings, cfg.seq_len, cfg.data, vocab, cfg.arch)
    return m.n_params(), m.n_params(embeddings=False), m.flops_per_token(cfg.seq_len, cfg.noise_density, cfg.clm_ratio)


# ------------------------------------------------------------------------ loading
def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    path = Path(path)
    doc = read_toml(path, "sweep file")

    known = {"sweep", "grid", "isoflop", "train", "eval", "executor", "slurm"}
    for key in doc:
        if key not in known:
            raise UserError(f"{path}: unknown section [{key}] (known: {', '.join(sorted(known))})")

    s = _Section(path, "sweep", doc.get("sweep", {}))
    name = s.get("name", (str,), default=path.stem)
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"{s.where('name')}: {name!r} is not usable as a directory name")
    kind = s.get("kind", (str,), required=True)
    if kind not in KINDS:
        raise UserError(f"{s.where('kind')} must be one of {', '.join(KINDS)}, got {kind!r}")
    # Read even when `out` is given (launch --out): a file's own out is then overridden, not unknown.
    warnings: list[str] = []
    file_out = s.get("out", (str,))
    # The file's `out` is read from the file's folder; the default, like --out, from here.
    file_out = f"runs/{name}" if file_out is None else file_path(path, file_out, s.where("out"), warnings)
    out_dir = Path(out) if out is not None else Path(file_out)
    # The data's vocabulary sizes the models; stating it lets a laptop plan a cluster's sweep.
    vocab = s.get("vocab_size", (int,))
    if vocab is not None and vocab < 2:
        raise UserError(f"{s.where('vocab_size')} must be a vocabulary size, got {vocab}")
    s.get("description", (str,))
    branches = s.get("branches", (bool,), False)
    s.finish()

    # Keys given by size ([executor] gpus_per_node = { "0" = 1, "1B" = 8 }): the sweep's own
    # settings take each one's smallest entry, each run its size's (_sized, below).
    ex_table, sl_table = doc.get("executor", {}), doc.get("slurm", {})
    ex_sizes, sl_sizes = by_size.size_tables(path, "executor", ex_table), by_size.size_tables(path, "slurm", sl_table)
    resources = _resources(path, by_size.at_size(ex_table, ex_sizes, None, ""))
    slurm = _slurm(path, by_size.at_size(sl_table, sl_sizes, None, ""))
    _check_entries(path, ex_table, ex_sizes, sl_table, sl_sizes)
    base, derived = _train(path, doc.get("train", {}), warnings)
    if "eval" in doc:
        base = base.updated(eval=_eval(path, doc["eval"], warnings))
    # The batch is global: it must split evenly over the world the executor gives each run.
    base = base.updated(lambda key: f"{path}: train.{key}" if key not in ("devices", "num_nodes") else
                        f"{path}: executor.tasks_per_node x nodes", devices=resources.tasks, num_nodes=resources.nodes)

    if vocab is None and base.data not in (None, "", "default") and not Path(base.data).exists():
        # The models are sized from the data's vocabulary: without the data (and no stated
        # vocab_size) nothing can be planned, and saying so beats a "budget too small".
        raise UserError(f"{path}: train.data = {base.data!r}: no such file or directory (run `scaling prepare`, "
                        "or state [sweep] vocab_size to plan without the data)")
    for other in KINDS:
        if other != kind and other in doc:
            raise UserError(f"{path}: [{other}] given but sweep.kind is {kind!r}")
    if kind not in doc:
        raise UserError(f"{path}: sweep.kind is {kind!r} but there is no [{kind}] section")
    notes: list[str] = []
    expand = _expand_grid if kind == "grid" else _expand_isoflop
    try:
        runs = expand(path, _Section(path, kind, doc[kind]), base, name, notes, vocab)
    except UserError as e:
        msg = str(e)
        raise UserError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    if derived and kind == "isoflop" and "steps" in doc[kind] and "batch_size" in derived:
        raise UserError(f"{path}: isoflop.steps sets every run's batch; it cannot be combined with train.batch_size = {{ ... }}")
    runs = [_derive(path, r, derived) for r in runs]
    runs = _dedupe(runs, notes)
    if ex_sizes or sl_sizes:
        runs = [_sized(path, r, (ex_table, ex_sizes), (sl_table, sl_sizes)) for r in runs]
    runs = [_placed(path, r, resources, vocab) for r in runs]
    if branches:
        runs = branch_runs(s.where("branches"), runs)
    return Sweep(name, kind, path, out_dir, runs, resources, slurm, notes, vocab, warnings, branches)


def file_path(path: Path, value: str, where: str, warnings: list[str]) -> str:
    """A path written in the sweep file at `path`, read from the file's folder. Before this
    rule, paths were read from the current directory: where the file's folder has nothing by
    that name and the current directory has, the old reading is kept, with a warning (a sweep
    launched so before keeps its data and directory); where both have it, the file's wins,
    with a warning that says the other is not used. Absolute paths are taken as they are."""
    folder = path.parent
    if not value or os.path.isabs(value) or value.startswith("~") or os.path.abspath(folder) == os.getcwd():
        return value
    mine = os.path.normpath(folder / value)
    here = os.path.normpath(value)
    if os.path.exists(mine):
        # "." is the file's own folder (what `sweep extend` writes): never the current directory.
        if value != "." and os.path.exists(here) and not os.path.samefile(mine, here):
            warnings.append(f"{where} = {value!r}: read from the sweep file's folder ({mine}); "
                            f"{here} in the current directory is not used")
        return mine
    if os.path.exists(here):
        warnings.append(f"{where} = {value!r}: not in the sweep file's folder ({folder}); read from the current "
                        f"directory as before; write {os.path.relpath(here, folder)!r} (relative to the file) to keep it")
        return here
    return mine


def _train(path: Path, table: Any, warnings: list[str]) -> tuple[TrainConfig, dict]:
    """[train]: any TrainConfig field the expansion does not own, type-checked; and the
    per-size values (lr, batch_size given as a table: tuned or a power rule of N)."""
    sec = _Section(path, "train", table)
    hints = typing.get_type_hints(TrainConfig)
    values: dict[str, Any] = {}
    derived: dict[str, dict] = {}
    for f in fields(TrainConfig):
        if f.name in _OWNED or f.name not in sec.table:
            continue
        allowed = _allowed_types(hints[f.name])
        if f.name == "lr" and sec.table[f.name] == "rule":
            sec.read.add("lr")
            values["lr"] = None  # TOML has no null: "rule" means the trainer's lr rule of N
            continue
        if f.name in ("lr", "batch_size") and (isinstance(sec.table[f.name], dict) or sec.table[f.name] == "tuned"):
            sec.read.add(f.name)
            derived[f.name] = _per_size(sec.where(f.name), sec.table[f.name])
            if "tuned" in derived[f.name]:
                derived[f.name]["tuned"] = file_path(path, derived[f.name]["tuned"], sec.where(f.name), warnings)
            continue
        v = sec.get(f.name, allowed)
        if f.name == "data" and isinstance(v, str) and v != "default":
            # Absolute: every run records it, and a run is read later from anywhere (a kept
            # model's validation, a relaunch from another folder, a Slurm job's own cwd).
            v = os.path.abspath(file_path(path, v, sec.where("data"), warnings))
        if float in allowed and isinstance(v, int):
            v = float(v)
        values[f.name] = v
    for k in sec.table:
        if k == "eval":
            raise UserError(f"{sec.where(k)}: a run's tasks go in the [eval] section (tasks = [...]; docs/tasks.md)")
        if k in _OWNED:
            raise UserError(f"{sec.where(k)}: set by the sweep itself, not in [train] "
                            f"(sizes/budgets go in [grid]/[isoflop], devices in [executor])")
    sec.finish(also_known=(f.name for f in fields(TrainConfig) if f.name not in _OWNED), set_elsewhere=_OWNED)
    return TrainConfig.build(values, sec.where), derived


def _eval(path: Path, table: Any, warnings: list[str]) -> list[str]:
    """[eval] tasks = [...]: built-in task names and .jsonl task files (read from the sweep
    file's folder, recorded absolute), checked now; every run scores them (docs/tasks.md)."""
    sec = _Section(path, "eval", table)
    names = sec.get_list("tasks", (str,), required=True)
    sec.finish()
    return checked_eval_list(names, sec.where("tasks"),
                             lambda n: os.path.abspath(file_path(path, n, sec.where("tasks"), warnings)))


def _per_size(where: str, v: Any) -> dict:
    """lr = { tuned = "tune/demo" } (the studies' best, or their fitted rule between tuned
    sizes) or lr = { rule = "power", coef = 0.05, exp = -0.3 } (coef * N^exp, N non-embedding)."""
    if v == "tuned":
        raise UserError(f'{where} = "tuned" needs the study directory: write {{ tuned = "tune/<name>" }}')
    keys = set(v)
    if keys == {"tuned"}:
        if not isinstance(v["tuned"], str) or not v["tuned"]:
            raise UserError(f"{where}.tuned must be a study directory (a string), got {v['tuned']!r}")
        return {"tuned": v["tuned"]}
    if keys == {"rule", "coef", "exp"}:
        if v["rule"] != "power":
            raise UserError(f'{where}.rule must be "power", got {v["rule"]!r}')
        for k in ("coef", "exp"):
            if isinstance(v[k], bool) or not isinstance(v[k], (int, float)) or not math.isfinite(v[k]):
                raise UserError(f"{where}.{k} must be a number, got {v[k]!r}")
        if v["coef"] <= 0:
            raise UserError(f"{where}.coef must be positive, got {v['coef']!r}")
        return {"coef": float(v["coef"]), "exp": float(v["exp"])}
    unknown = sorted(keys - {"tuned", "rule", "coef", "exp"})
    what = f"unknown key '{unknown[0]}'" if unknown else f"keys {', '.join(sorted(keys)) or 'none'}"
    raise UserError(f'{where}: {what}; write {{ tuned = "DIR" }} or {{ rule = "power", coef = ..., exp = ... }}')


def _derive(path: Path, r: RunSpec, derived: dict) -> RunSpec:
    """Give a run its per-size lr / batch size. A new batch keeps the run's tokens in whole
    batches of it."""
    if not derived:
        return replace(r, sources=(("lr", "rule of N" if r.config.lr is None else "set"),))
    cfg, sources = r.config, {"lr": "rule of N" if r.config.lr is None else "set"}
    for key, how in derived.items():
        where = f"{path}: train.{key}"
        if "tuned" in how:
            value, sources[key] = resolve(how["tuned"], key, r.n_params_nonembed, f"{where} (run {r.name})")
        else:
            value, sources[key] = how["coef"] * r.n_params_nonembed ** how["exp"], f"rule {how['coef']:.3g}·N^{how['exp']:.3g}"
        cfg = cfg.updated(lambda k: f"{path}: train.{k} (run {r.name})",
                          **{key: max(1, round(value)) if key == "batch_size" else float(value)})
    if "batch_size" in derived:
        cfg = replace(cfg, tokens=cfg.whole_batches(r.tokens, f"{where}: run {r.name}"))
    return replace(r, config=cfg, sources=tuple(sources.items()))


def _check_entries(path: Path, ex_table, ex_sizes, sl_table, sl_sizes) -> None:
    """Every entry of a table by size, checked as a plain value (also those no run takes)."""
    for section, table, sizes, read in (("executor", ex_table, ex_sizes, _resources), ("slurm", sl_table, sl_sizes, _slurm)):
        for key, n, variant in by_size.variants(table, sizes):
            try:
                read(path, variant)
            except UserError as e:
                raise UserError(f"{e} (the entry for {format_count(n)} of {section}.{key})") from None


def _sized(path: Path, r: RunSpec, executor: tuple, slurm: tuple) -> RunSpec:
    """A run's own resources from the keys given by size; its world (DDP processes) too."""
    where = f"{path}: "
    res = _resources(path, by_size.at_size(*executor, r.n_params, where + "executor"))
    sl = _slurm(path, by_size.at_size(*slurm, r.n_params, where + "slurm"))
    cfg = r.config.updated(lambda key: f"{path}: executor.tasks_per_node x nodes (run {r.name})",
                           devices=res.tasks, num_nodes=res.nodes)
    return replace(r, config=cfg, resources=res, slurm=sl)


def _placed(path: Path, r: RunSpec, resources: Resources, vocab: int | None) -> RunSpec:
    """The run with the strategy and micro-batch that fit its GPUs (placement.py), or refused."""
    cfg = r.config
    run, where = place(path, r, r.resources or resources, _model(cfg.params, cfg.tied_embeddings, cfg.seq_len,
                                                                  cfg.data, vocab, cfg.arch))
    return replace(run, placement=where)


def _allowed_types(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    kinds = tuple(a for a in args if a is not type(None))
    if float in kinds:
        kinds += (int,)
    return kinds


def _resources(path: Path, table: Any) -> Resources:
    sec = _Section(path, "executor", table)
    r = Resources(
        cpus_per_task=sec.get("cpus_per_task", (int,), 1),
        gpus_per_node=sec.get("gpus_per_node", (int,), 0),
        tasks_per_node=sec.get("tasks_per_node", (int,), 0),
        nodes=sec.get("nodes", (int,), 1),
        mem_gb=sec.get("mem_gb", (int, float)),
        gpu_mem_gb=sec.get("gpu_mem_gb", (int, float)),
        time_min=_time_min(sec),
        parallelism=sec.get("parallelism", (int,)),
        default=sec.get("default", (str,), "local"),
        achieved_flops=_opt_float(sec, "achieved_flops"),
        max_tokens_per_s=_opt_float(sec, "max_tokens_per_s"),
        overhead_s=float(sec.get("overhead_s", (int, float), 30.0)),
    )
    sec.finish()
    for key in ("cpus_per_task", "nodes"):
        if getattr(r, key) < 1:
            raise UserError(f"{sec.where(key)} must be at least 1, got {getattr(r, key)}")
    for key in ("gpus_per_node", "tasks_per_node"):
        if getattr(r, key) < 0:
            raise UserError(f"{sec.where(key)} must be 0 or more, got {getattr(r, key)}")
    if r.gpus_per_node and r.tasks_per_node and r.tasks_per_node != r.gpus_per_node:
        raise UserError(f"{sec.where('tasks_per_node')} ({r.tasks_per_node}) must equal gpus_per_node "
                        f"({r.gpus_per_node}): DDP runs one process per GPU")
    if r.parallelism is not None and r.parallelism < 1:
        raise UserError(f"{sec.where('parallelism')} must be at least 1, got {r.parallelism}")
    if r.default not in EXECUTORS:
        raise UserError(f"{sec.where('default')} must be one of {', '.join(EXECUTORS)}, got {r.default!r}")
    if r.time_min < 3:
        # Below 3 minutes USR2 can arrive before submitit installs its handler (exit 140).
        key = "time" if "time" in sec.table else "time_min"
        raise UserError(f"{sec.where(key)} must be at least 3 minutes, got {sec.table.get(key, r.time_min)!r}")
    for key in ("mem_gb", "gpu_mem_gb"):
        if getattr(r, key) is not None and getattr(r, key) <= 0:
            raise UserError(f"{sec.where(key)} must be positive, got {getattr(r, key)}")
    return r


def _time_min(sec: _Section) -> int:
    """`time` (minutes, or Slurm's "HH:MM:SS", "D-HH:MM:SS") or `time_min` (minutes), not both."""
    if "time" in sec.table and "time_min" in sec.table:
        raise UserError(f"{sec.path}: [executor] gives both 'time' and 'time_min'; keep one")
    if "time" in sec.table:
        sec.read.add("time_min")
        return by_size.minutes(sec.where("time"), sec.get("time", (int, str)))
    sec.read.add("time")
    return sec.get("time_min", (int,), 24 * 60)


def _opt_float(sec: _Section, key: str) -> float | None:
    v = sec.get(key, (int, float, str))
    if isinstance(v, bool):
        raise UserError(f"{sec.where(key)} must be a positive number, got {v!r}")
    if v is None:
        return None
    try:
        x = float(v)
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or x <= 0:
        raise UserError(f"{sec.where(key)} must be a positive number like 2e11, got {v!r}")
    return x


def _slurm(path: Path, table: Any) -> SlurmSettings:
    sec = _Section(path, "slurm", table)
    setup = sec.get_list("setup", (str,)) or []
    extra = sec.get("extra", (dict,), {})
    for k, v in extra.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise UserError(f"{sec.where('extra')}.{k} must be a string or number, got {v!r}")
    s = SlurmSettings(
        partition=sec.get("partition", (str,)),
        account=sec.get("account", (str,)),
        qos=sec.get("qos", (str,)),
        constraint=sec.get("constraint", (str,)),
        signal_delay_s=sec.get("signal_delay_s", (int,), 90),
        max_num_timeout=sec.get("max_num_timeout", (int,), 3),
        setup=tuple(setup),
        options=_sbatch_options(sec, extra),
        extra=dict(extra),
    )
    sec.finish()
    if s.signal_delay_s < 1:
        raise UserError(f"{sec.where('signal_delay_s')} must be at least 1, got {s.signal_delay_s}")
    return s


def _sbatch_options(sec: _Section, extra: dict) -> dict:
    """sbatch's common options by name (gres = "gpu:a100:2", exclusive = true, mail_type = "END"):
    a string or number is `--opt=value`, true the bare flag, false leaves it out."""
    out = {}
    for key in SBATCH_OPTIONS:
        v = sec.get(key, (str, int, float, bool))
        if v is None or v is False:
            continue
        if key in extra:
            raise UserError(f"{sec.where(key)}: also given in slurm.extra; keep one")
        if isinstance(v, str) and not v.strip():
            raise UserError(f"{sec.where(key)} must not be empty (true gives the bare flag)")
        out[key] = v
    return out


# ---------------------------------------------------------------------- expansion
def _make(name: str, base: TrainConfig, target: int, tokens: int, sweep: str,
          budget: float | None, where: str, vocab: int | None) -> RunSpec:
    params = format_count(target)
    cfg = replace(base, params=params, tokens=0, extra={"sweep": sweep, "run": name, "budget": budget})
    try:
        n, n_ne, fpt = model_stats(cfg, vocab)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return RunSpec(name, replace(cfg, tokens=tokens), n, n_ne, fpt, budget)


def _expand_grid(path: Path, sec: _Section, base: TrainConfig, sweep: str, notes: list[str],
                 vocab: int | None) -> list[RunSpec]:
    sizes = sec.get_list("sizes", (str, int, float), required=True)
    tokens = sec.get_list("tokens", (str, int, float))
    multiples = sec.get_list("tokens_per_param", (str, int, float))
    sec.finish()
    if (tokens is None) == (multiples is None):
        raise UserError(f"{path}: [grid] needs exactly one of 'tokens' or 'tokens_per_param'")
    runs = []
    for i, size in enumerate(sizes):
        target = _count(f"{sec.where('sizes')}[{i}]", size)
        spec = _make("", base, target, 0, sweep, None, f"{sec.where('sizes')}[{i}] = {size!r}", vocab)
        budgets = (
            [(f"tokens[{j}]", _count(f"{sec.where('tokens')}[{j}]", t), t) for j, t in enumerate(tokens)]
            if tokens is not None
            else [(f"tokens_per_param[{j}]", _multiple(f"{sec.where('tokens_per_param')}[{j}]", m) * spec.n_params, m)
                  for j, m in enumerate(multiples)]
        )
        for key, d, raw in budgets:
            d_run = base.whole_batches(d, f"{path}: grid.{key} = {_show(raw)} for size {format_count(target)}")
            name = f"N{format_count(target)}-D{format_count(d_run)}"
            runs.append(replace(spec, name=name, config=replace(
                spec.config, tokens=d_run, extra={"sweep": sweep, "run": name, "budget": None})))
    return runs


def _expand_isoflop(path: Path, sec: _Section, base: TrainConfig, sweep: str, notes: list[str],
                    vocab: int | None) -> list[RunSpec]:
    budgets = sec.get_list("budgets", (str, int, float), required=True)
    explicit = sec.get_list("sizes", (str, int, float, list))
    k = sec.get("sizes_per_budget", (int,), 5)
    spread = float(sec.get("spread", (int, float), 4.0))
    center_tpp = float(sec.get("center_tokens_per_param", (int, float), CHINCHILLA_TOKENS_PER_PARAM))
    steps = sec.get("steps", (int,), None)
    sec.finish()
    if steps is not None and steps < 10:
        raise UserError(f"{sec.where('steps')} must be at least 10 optimizer steps, got {steps}")
    if explicit is None:
        if k < 1:
            raise UserError(f"{sec.where('sizes_per_budget')} must be at least 1, got {k}")
        if spread < 1:
            raise UserError(f"{sec.where('spread')} must be at least 1 (a factor either side), got {spread}")
        if center_tpp <= 0:
            raise UserError(f"{sec.where('center_tokens_per_param')} must be positive, got {center_tpp}")
    fixed = None if explicit is None else _sizes_by_budget(sec.where("sizes"), explicit, len(budgets))
    runs = []
    for i, raw in enumerate(budgets):
        c = _flops(f"{sec.where('budgets')}[{i}]", raw)
        where = f"{path}: isoflop.budgets[{i}] = {_show(raw)}"
        if fixed is not None:
            targets = fixed[i]
        else:
            center = _center(c, center_tpp, base, where, vocab)
            exps = [0.0] if k == 1 else [-1 + 2 * j / (k - 1) for j in range(k)]
            targets = [_round_sig(center * spread**e) for e in exps]
        for target in targets:
            spec = _make("", base, target, 0, sweep, c, f"{where}, size {format_count(target)}", vocab)
            run_base = base
            if steps is not None:
                # Every run takes the same number of optimizer steps: its batch grows with its
                # tokens, so no run of the sweep is favoured for having more updates.
                per_seq = base.tokens_per_step // base.batch_size
                bs = max(1, round(c / spec.flops_per_token / (steps * per_seq)))
                run_base = base.updated(lambda k: f"{where}, size {format_count(target)}: isoflop.steps = {steps} gives "
                                        f"it a batch of {bs}, and train.{k}", batch_size=bs)
                spec = replace(spec, config=replace(spec.config, batch_size=run_base.batch_size))
            d = run_base.whole_batches(c / spec.flops_per_token, f"{where}: size {format_count(target)} costs "
                                       f"{spec.flops_per_token:.3g} FLOPs per token, so the budget buys")
            name = f"C{format_budget(c)}-N{format_count(target)}"
            runs.append(replace(spec, name=name, config=replace(
                spec.config, tokens=d, extra={"sweep": sweep, "run": name, "budget": c})))
    return runs


def _sizes_by_budget(where: str, sizes: list, n_budgets: int) -> list[list[int]]:
    """isoflop.sizes: one list for every budget (["1M", "2M"]), or one list per budget
    ([["1M", "2M"], ["4M", "8M"]], what `scaling sweep extend` writes: each budget its own sizes)."""
    nested = [isinstance(s, list) for s in sizes]
    if not any(nested):
        one = [_count(f"{where}[{j}]", s) for j, s in enumerate(sizes)]
        return [one] * n_budgets
    if not all(nested) or len(sizes) != n_budgets:
        raise UserError(f"{where}: give one list of sizes for all budgets, or one list per budget "
                        f"({n_budgets} lists, as many as isoflop.budgets), not {len(sizes)} entries of which "
                        f"{sum(nested)} are lists")
    out = []
    for i, row in enumerate(sizes):
        if not row:
            raise UserError(f"{where}[{i}] must not be empty")
        out.append([_count(f"{where}[{i}][{j}]", s) for j, s in enumerate(row)])
    return out


def _center(c: float, tpp: float, base: TrainConfig, where: str, vocab: int | None) -> float:
    """The size N with D/N = tpp at budget C, using the real FLOPs per token: fixed point of
    N = sqrt(C / (tpp * f(N)/N)), where f(N)/N is nearly constant (about 6)."""
    n = math.sqrt(c / (6.0 * tpp))
    for _ in range(4):
        try:
            m = _model(format_count(_round_sig(n)), base.tied_embeddings, base.seq_len, base.data, vocab, base.arch)
        except UserError as e:
            raise UserError(f"{where}: budget too small: its compute-optimal size would be about "
                            f"{format_count(n)} parameters, and no model that small can be built ({e})") from None
        per_param = m.flops_per_token(base.seq_len, base.noise_density, base.clm_ratio) / m.n_params()
        n = math.sqrt(c / (tpp * per_param))
    return n


def _dedupe(runs: list[RunSpec], notes: list[str]) -> list[RunSpec]:
    """Two size targets can map to one shape (small sizes have few shapes): train it once."""
    seen: dict[tuple, str] = {}
    kept = []
    for r in runs:
        key = (r.n_params, r.n_params_nonembed, r.tokens, r.budget)
        if key in seen:
            notes.append(f"{r.name} is the same model and tokens as {seen[key]}: trained once")
            continue
        seen[key] = r.name
        kept.append(r)
    names = [r.name for r in kept]
    if len(set(names)) != len(names):  # cannot happen with distinct keys, but a name collision would merge runs
        raise UserError("sweep expands to two runs with the same name")
    return kept
