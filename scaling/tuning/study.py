"""What a tuning study is, and the one place it is stored.

    OUT/study.journal          every size's Optuna study (JournalStorage over a file: safe on a
                               shared filesystem where SQLite is not; the only coordination
                               between trial jobs)
    OUT/tune.json              the command's job ledger: which job runs which slot
    OUT/<size>/trials/<n>/     trial n's run directory (run.json, metrics.parquet, checkpoints/)
    OUT/<size>/jobs/<k>.json   what slot k's job recorded: job id, pid, trial, heartbeat, checkpoints
    OUT/<size>/best.json       the best trial of that size
    OUT/tuned.json             best values per size and the fitted rules (rules.py)

A study is one size at one token budget; its identity (the trial template, the search
space, the pruner, the seed) is stored with it, and a rerun with other settings is refused.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from scaling.base.config import TrainConfig, format_count, parse_count
from scaling.base.errors import UserError

JOURNAL = "study.journal"
LEDGER = "tune.json"
TRIALS_DIR = "trials"
JOBS_DIR = "jobs"
BEST = "best.json"
LOCK = ".tune.lock"
PRUNERS = ("none", "median", "halving")


@dataclass(frozen=True)
class Space:
    """The search space: lr always; batch size and AdamW beta2 when given ranges (Porian et
    al.'s three). All log-uniform: lr and batch in their own units, beta2 through 1 - beta2
    (0.9 -> 0.999 is a factor 100 in the averaging horizon, not 11% of a unit interval)."""

    lr: tuple[float, float] = (1e-4, 3e-2)
    batch_size: tuple[int, int] | None = None
    beta2: tuple[float, float] | None = None

    FLAGS = {"lr": "--lr-min/--lr-max", "batch_size": "--batch-range", "beta2": "--beta2-range"}

    def check(self, flag=FLAGS.get) -> "Space":
        for name in ("lr", "batch_size", "beta2"):
            rng = getattr(self, name)
            if rng is None:
                continue
            lo, hi = rng
            for v in (lo, hi):  # the limits of a run's settings have one owner: TrainConfig.check
                TrainConfig.build({name: v}, lambda key, n=name: flag(n))
            if lo >= hi:
                raise UserError(f"{flag(name)}: the low end ({lo:g}) must be smaller than the high end ({hi:g})")
        if self.lr[1] >= 1:
            raise UserError(f"{flag('lr')}: a peak learning rate of {self.lr[1]:g} or more is not a search range; "
                            f"the high end must be below 1")
        if self.beta2 is not None and self.beta2[0] <= 0:
            raise UserError(f"{flag('beta2')}: the low end must be above 0, got {self.beta2[0]:g}")
        return self

    def distributions(self) -> dict:
        from optuna.distributions import FloatDistribution, IntDistribution

        d = {"lr": FloatDistribution(*self.lr, log=True)}
        if self.batch_size is not None:
            d["batch_size"] = IntDistribution(*self.batch_size, log=True)
        if self.beta2 is not None:
            d["one_minus_beta2"] = FloatDistribution(1 - self.beta2[1], 1 - self.beta2[0], log=True)
        return d

    @staticmethod
    def values(params: dict) -> dict:
        """Optuna's parameters -> TrainConfig fields."""
        out = {k: v for k, v in params.items() if k in ("lr", "batch_size")}
        if "one_minus_beta2" in params:
            out["beta2"] = 1 - params["one_minus_beta2"]
        return out

    def tuned(self) -> list[str]:
        return [n for n in ("lr", "batch_size", "beta2") if n == "lr" or getattr(self, n) is not None]

    def to_dict(self) -> dict:
        return {k: list(v) if v is not None else None for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class SizeStudy:
    """One size's study: the trial template (every setting but the tuned ones)."""

    key: str                 # "300K": the size's directory and study name
    template: TrainConfig    # params, tokens, data, shape ...; lr None
    n_params: int
    n_params_nonembed: int
    flops_per_token: float

    @property
    def name(self) -> str:
        return f"lr-{self.key}"

    @property
    def flops(self) -> float:
        return self.template.tokens * self.flops_per_token


@dataclass
class TuneConfig:
    sizes: list[SizeStudy]
    out: Path
    space: Space = field(default_factory=Space)
    trials: int = 8                 # per size; failed trials do not count (a rerun replaces them)
    pruner: str = "median"
    seed: int = 0

    def identity(self, s: SizeStudy) -> dict:
        """What defines a study: rerunning with other values would mix incomparable trials.
        The trial count and the executor may change between reruns."""
        d = s.template.identity()
        for k in self.space.tuned():
            d.pop(k, None)
        return {"train": d, "space": self.space.to_dict(), "pruner": self.pruner, "seed": self.seed}

    def check(self) -> "TuneConfig":
        if self.trials < 1:
            raise UserError(f"--trials must be >= 1, got {self.trials}")
        if self.pruner not in PRUNERS:
            raise UserError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        self.space.check()
        for s in self.sizes:
            if s.template.devices * s.template.num_nodes > 1:
                raise UserError("tune: trials are single-process runs (a pruner's verdict is per process); "
                                "set [executor] tasks_per_node and nodes to 1")
            batch_hi = self.space.batch_size[1] if self.space.batch_size else s.template.batch_size
            s.template.whole_batches(s.template.tokens, f"size {s.key}", batch_size=batch_hi)
        return self


def size_key(params) -> str:
    return format_count(parse_count(params, "size"))


# --------------------------------------------------------------------- storage
def storage(out: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(Path(out) / JOURNAL)))


def pruner(kind: str):
    """Median: stop a trial whose loss at a validation point is worse than the median of the
    completed trials at that point (after 3 of them). Successive halving: keep the best half
    at validation points 1, 2, 4, ... The points are indexed by position in the run's
    log-spaced schedule, not by step: a trial with another batch size has other steps, but
    its k-th point falls at the same fraction of its token budget."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    return optuna.pruners.NopPruner()


def sampler(seed: int, trials: int):
    import optuna

    # Few trials: TPE's default 10 random start-up trials would make a whole study random.
    # constant_liar: trials run at once; a running trial counts as a bad result at its point,
    # so parallel jobs do not all ask for the same region.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, trials // 2)), constant_liar=True)


def load(out: Path, s_name: str, kind: str = "none", sampler_=None):
    import optuna

    try:
        return optuna.load_study(study_name=s_name, storage=storage(out), pruner=pruner(kind), sampler=sampler_)
    except KeyError:
        raise UserError(f"{Path(out) / JOURNAL}: no study {s_name!r}") from None


def study_names(out: Path) -> list[str]:
    import optuna

    if not (Path(out) / JOURNAL).exists():
        raise UserError(f"{out}: no tuning study here (no {JOURNAL})")
    return sorted(optuna.get_all_study_names(storage(out)), key=_size_order)


def _size_order(name: str) -> float:
    try:
        return parse_count(name.removeprefix("lr-"))
    except UserError:
        return math.inf


def open_or_create(cfg: TuneConfig, s: SizeStudy, rule: dict | None):
    """The study of size s, created with its identity (and the rule-of-N trial queued first,
    so best.json compares tuned and rule like for like) or checked against it."""
    import optuna

    st = storage(cfg.out)
    ident = cfg.identity(s)
    if s.name not in optuna.get_all_study_names(st):
        study = optuna.create_study(study_name=s.name, storage=st, direction="minimize")
        study.set_user_attr("config", ident)
        study.set_user_attr("size", {"key": s.key, "n_params": s.n_params, "n_params_nonembed": s.n_params_nonembed,
                                     "tokens": s.template.tokens, "flops": s.flops})
        if rule is not None:
            study.set_user_attr("rule", rule)
            fixed = rule_params(cfg.space, s.template, rule["lr"])
            if fixed is not None:
                study.enqueue_trial(fixed, user_attrs={"rule": True})
        return study
    study = optuna.load_study(study_name=s.name, storage=st)
    old = study.user_attrs.get("config", {})
    diff = _diff(old, ident)
    if diff:
        raise UserError(f"{cfg.out}: existing study {s.name} has different settings ({diff}); use a new --out")
    return study


def rule_params(space: Space, template: TrainConfig, rule_lr: float) -> dict | None:
    """The run a sweep would make today (rule-of-N lr, the template's batch and beta2), as
    Optuna parameters; None when it lies outside the space."""
    p = {"lr": rule_lr}
    if space.batch_size is not None:
        p["batch_size"] = template.batch_size
    if space.beta2 is not None:
        p["one_minus_beta2"] = 1 - template.beta2
    for k, d in space.distributions().items():
        if not d.low <= p[k] <= d.high:
            return None
    return p


def _diff(old: dict, new: dict, prefix: str = "") -> str:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            d = _diff(a, b, f"{prefix}{k}.")
            if d:
                out.append(d)
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return ", ".join(out[:4])


def fail_trial(study, number: int, why: str) -> bool:
    """Mark a RUNNING trial failed (its job died); False if it had finished meanwhile."""
    from optuna.trial import TrialState

    t = study.get_trials(deepcopy=False)[number]
    if t.state != TrialState.RUNNING:
        return False
    study._storage.set_trial_user_attr(t._trial_id, "error", why)
    try:
        study.tell(number, state=TrialState.FAIL)
    except (ValueError, RuntimeError):  # told by its job in the meantime
        return False
    return True
