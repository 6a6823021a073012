"""Typed configuration of one training run.

A run is fully described by a TrainConfig (plus the code version): `scaling train` builds
one from its flags, a sweep file expands into many. It is stored in run.json, and a run
directory is only ever resumed with the same config.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from scaling.base.errors import UserError

_SUFFIXES = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_count(value: str | int | float, what: str = "count") -> int:
    """'350M' -> 350_000_000, '1.5B' -> 1_500_000_000, '20b', '1T', 2e7, 12345 -> ints.

    Raises UserError naming the bad value.
    """
    if isinstance(value, bool):
        raise UserError(f"{what}: expected a number like 10M, 1.5B or 20000000, got {value!r}")
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        s = str(value).strip().upper().replace("_", "").replace(",", "")
        suffix = s[-1:] if s[-1:] in _SUFFIXES and s[-1:].isalpha() else ""
        num = s[: -1] if suffix else s
        try:
            n = float(num) * _SUFFIXES[suffix]
        except ValueError:
            raise UserError(
                f"{what}: cannot read {value!r}; expected a number like 10M, 1.5B, 20B, 1T or 20000000"
            ) from None
    if not math.isfinite(n) or n <= 0:
        raise UserError(f"{what}: must be a positive number, got {value!r}")
    return int(round(n))


def read_toml(path, what: str = "file") -> dict:
    """A TOML file as a dict; a missing file, bad TOML or binary content is a UserError
    naming the path (and, for bad TOML, the line)."""
    import tomllib
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: {what} not found")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a text file") from None


def format_count(n: float) -> str:
    """20_000_000_000 -> '20B', 1_500_000 -> '1.5M'."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


# A run's optional Lightning logger -> the packages that provide it (any one); csv needs none.
LOGGERS = {"none": (), "csv": (), "tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb",),
           "mlflow": ("mlflow",)}


class ConfigError(UserError):
    """A setting outside its limits: raised where a config is made, renamed by `build` for
    the entry point (a flag, a sweep file's key) that the user wrote it in."""

    def __init__(self, key: str, where, reason: str):
        super().__init__(f"{where(key)} {reason}")
        self.key, self.reason = key, reason

    def named(self, where) -> UserError:
        return UserError(f"{where(self.key)} {self.reason}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run. Defaults suit a CPU laptop; sweeps override them.

    Frozen: checked once, when it is made, it stays valid (dataclasses.replace and `updated`
    make a new one, checked again).

    One piece: the fields, their limits (LIMITS) and the check of them are the one owner of
    what a valid run is; every entry point builds its config here (`build`, `from_dict`)."""

    params: str = "2M"                 # size target, expanded by ModelConfig.from_params
    tokens: int = 20_000_000           # token budget D: sequences x seq_len (see objectives.py)
    out: str = "runs/run"              # run directory
    data: str | None = None            # token shards dir from `scaling prepare`; None = embedded corpus
    seed: int = 0
    # optimisation
    lr: float | None = None            # None = rule of N (see train.lr_rule)
    min_lr_ratio: float = 0.1          # the schedule ends at 10% of peak, at the budget
    warmup_frac: float = 0.02          # of the total steps; at least 1 step
    warmup_steps: int = 0              # fixed warmup steps; 0 = warmup_frac of the run's steps. A
                                       # branching sweep fixes it per size, so every D of a size
                                       # warms up alike and a branch equals a run from scratch
    schedule: str = "cosine"           # cosine | wsd (warmup, constant, cooldown; schedule.py)
    cooldown_frac: float = 0.2         # wsd: the cooldown's share of the steps (Hägele et al. 2024)
    cooldown_shape: str = "1-sqrt"     # wsd: 1-sqrt | linear, from peak to min_lr_ratio x peak
    weight_decay: float = 0.1          # not on biases and norms
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    batch_size: int = 16               # sequences per optimizer step, over all devices (global)
    micro_batch: int = 0               # sequences per device per forward/backward; 0 = its whole
                                       # share (batch_size / world): smaller means gradient accumulation
    # architecture: encdec (AlexaTM), decoder (decoder-only, causal), prefix-lm (decoder-only,
    # bidirectional over the prefix); see scaling/base/shapes.py ARCHS
    arch: str = "encdec"
    # objective
    seq_len: int = 128                 # source window length in tokens
    clm_ratio: float | None = None     # fraction of examples that are causal LM; None = the arch's
                                       # default, CLM_DEFAULT (0.2 for encdec, 1.0 decoder-only)
    noise_density: float = 0.15        # fraction of tokens dropped in denoising
    mean_span: float = 3.0             # Poisson mean of dropped span lengths
    # model shape overrides (None = size rule)
    tied_embeddings: bool = True
    # execution
    device: str = "auto"               # auto | cpu | cuda
    precision: str = "auto"            # auto (bf16-mixed on GPU, 32 on CPU) | 32 | bf16-mixed
    compile: bool = False              # torch.compile (GPU)
    devices: int = 1                   # DDP processes (GPUs per node)
    num_nodes: int = 1
    strategy: str = "auto"             # auto (DDP when several processes) | ddp | fsdp: FSDP2, the
                                       # weights, gradients and optimizer state sharded over the processes
    activation_checkpointing: bool = False  # recompute each block's activations in the backward
    val_points: int = 8                # validation evaluations at log-spaced token counts
    val_examples: int = 512            # validation examples per task (the same ones for every run)
    log_every: int = 10                # steps between metrics rows
    checkpoint_every_s: float = 60.0   # wall seconds between checkpoints/last.ckpt saves
    progress: bool = True              # progress bar on stderr
    keep_weights: bool = True          # a completed run keeps model.safetensors, model.json and its
                                       # tokenizer (scaling/base/rundir.py); false: nothing is kept
    logger: str = "none"               # none | csv | tensorboard | wandb | mlflow: a Lightning
                                       # logger writing into the run directory (LOGGERS)
    eval: list = field(default_factory=list)   # downstream tasks scored at every validation point:
                                       # built-in names (docsum, nextsent) and .jsonl task files
                                       # (docs/tasks.md); columns task.<name>.*
    extra: dict = field(default_factory=dict)  # free-form tags (sweep name, budget, ...)
    # branching (wsd): neither changes what is trained, so neither is part of the identity
    branch_from: str | None = None     # the trunk's run directory: a run with no checkpoint of its
                                       # own starts from the trunk's at its cooldown's first step
    branch_steps: tuple = ()           # a trunk's steps whose checkpoint it keeps for its branches

    # The limits of a run's settings, in one place: the CLI, sweep files, tune and the trainer
    # all call check(). (lo, hi, lo_open, hi_open); None = unbounded on that side.
    LIMITS = {
        "lr": (0.0, None, True, False),
        "min_lr_ratio": (0.0, 1.0, False, False),
        "warmup_frac": (0.0, 1.0, False, True),
        "weight_decay": (0.0, None, False, False),
        "beta1": (0.0, 1.0, False, True),
        "beta2": (0.0, 1.0, False, True),
        "grad_clip": (0.0, None, False, False),      # 0: no clipping
        "batch_size": (1, None, False, False),
        "micro_batch": (0, None, False, False),
        "seq_len": (16, None, False, False),
        "clm_ratio": (0.0, 1.0, False, False),
        # Dropping half the tokens or more leaves the decoder little to copy and spans that
        # overlap; the objective is built for AlexaTM's 15%.
        "noise_density": (0.0, 0.5, True, True),
        "mean_span": (1.0, None, False, False),
        "devices": (1, None, False, False),
        "num_nodes": (1, None, False, False),
        "val_points": (1, None, False, False),
        "val_examples": (1, None, False, False),
        "log_every": (1, None, False, False),
        "checkpoint_every_s": (0.0, None, True, False),
        "warmup_steps": (0, None, False, False),
        "cooldown_frac": (0.0, 1.0, True, False),
    }
    CHOICES = {"schedule": ("cosine", "wsd"), "cooldown_shape": ("1-sqrt", "linear")}

    # The objective a run trains on when clm_ratio is not given: AlexaTM's 80/20 mix for the
    # encoder-decoder, causal LM alone for a decoder-only model (GPT, PaLM; prefix LM reads
    # the same CLM examples with a bidirectional prefix).
    CLM_DEFAULT = {"encdec": 0.2, "decoder": 1.0, "prefix-lm": 1.0}

    def __post_init__(self):
        if self.clm_ratio is None and self.arch in self.CLM_DEFAULT:
            # Frozen: set once, here, so run.json and every copy record the number.
            object.__setattr__(self, "clm_ratio", self.CLM_DEFAULT[self.arch])
        if isinstance(self.branch_steps, list):   # as read back from JSON
            object.__setattr__(self, "branch_steps", tuple(self.branch_steps))
        self.check()

    def check(self, where=lambda key: key) -> "TrainConfig":
        """Raise UserError naming the setting (as `where(key)` spells it: a CLI flag, a sweep
        file's key) and the reason, for the first value outside LIMITS. Every config checks
        itself when it is made (__post_init__); `build` puts the entry point's name on it."""
        if self.arch not in self.CLM_DEFAULT:
            raise ConfigError("arch", where, f"must be one of {', '.join(self.CLM_DEFAULT)}, got {self.arch!r}")
        for key, (lo, hi, lo_open, hi_open) in self.LIMITS.items():
            v = getattr(self, key)
            if v is None and key == "lr":
                continue                      # the lr rule of N
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise ConfigError(key, where, f"must be a number, got {v!r}")
            bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
            bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
            if bad_lo or bad_hi:
                left = "(" if lo_open else "["
                right = ")" if hi_open else "]"
                span = f"{left}{lo:g}, {hi:g}{right}" if hi is not None else (f"> {lo:g}" if lo_open else f">= {lo:g}")
                raise ConfigError(key, where, f"must be {'in ' if hi is not None else ''}{span}, got {v!r}")
        world = self.devices * self.num_nodes
        if self.batch_size % world:
            raise ConfigError("batch_size", where, f"({self.batch_size}) must be a multiple of the world size "
                              f"devices x num_nodes = {world}: every process takes an equal share of each batch")
        if self.micro_batch and (self.batch_size // world) % self.micro_batch:
            raise ConfigError("micro_batch", where, f"({self.micro_batch}) must divide each process's share of the "
                              f"batch, {self.batch_size} / {world} = {self.batch_size // world}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError("device", where, f"must be auto, cpu or cuda, got {self.device!r}")
        if not isinstance(self.keep_weights, bool):
            raise ConfigError("keep_weights", where, f"must be true or false, got {self.keep_weights!r}")
        if self.strategy not in ("auto", "ddp", "fsdp"):
            raise ConfigError("strategy", where, f"must be auto, ddp or fsdp, got {self.strategy!r}")
        if not isinstance(self.activation_checkpointing, bool):
            raise ConfigError("activation_checkpointing", where, f"must be true or false, got {self.activation_checkpointing!r}")
        if self.precision not in ("auto", "32", "bf16-mixed"):
            raise ConfigError("precision", where, f"must be auto, 32 or bf16-mixed, got {self.precision!r}")
        if not isinstance(self.eval, list) or not all(isinstance(t, str) and t for t in self.eval):
            raise ConfigError("eval", where, f"must be a list of task names or .jsonl files, got {self.eval!r}")
        if self.logger not in LOGGERS:
            raise ConfigError("logger", where, f"must be one of {', '.join(LOGGERS)}, got {self.logger!r}")
        self._check_schedule(where)
        return self

    def _check_schedule(self, where) -> None:
        """The schedule's choices, and what a wsd run and its branches need."""
        for key, options in self.CHOICES.items():
            if getattr(self, key) not in options:
                raise ConfigError(key, where, f"must be one of {', '.join(options)}, got {getattr(self, key)!r}")
        if self.schedule == "wsd" and not self.warmup_steps and self.warmup_frac + self.cooldown_frac > 1:
            raise ConfigError("cooldown_frac", where, f"({self.cooldown_frac:g}) and warmup_frac "
                              f"({self.warmup_frac:g}) overlap: together they must be at most 1")
        if self.branch_from is not None and (not isinstance(self.branch_from, str) or not self.branch_from):
            raise ConfigError("branch_from", where, f"must be a run directory, got {self.branch_from!r}")
        if not isinstance(self.branch_steps, tuple) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in self.branch_steps):
            raise ConfigError("branch_steps", where, f"must be a list of steps >= 1, got {self.branch_steps!r}")
        if (self.branch_from or self.branch_steps) and self.strategy == "fsdp":
            # A trunk's branch checkpoints are one file, as a DDP run's; a sharded run's are folders.
            raise ConfigError("strategy", where, "fsdp: a branching sweep's trunks and branches do not shard yet; "
                              "use strategy ddp (or auto), or a sweep without branches")
        if (self.branch_from or self.branch_steps) and self.schedule != "wsd":
            key = "branch_from" if self.branch_from else "branch_steps"
            raise ConfigError(key, where, f"needs schedule wsd (a branch is a cooldown from a constant lr), "
                              f"got schedule {self.schedule!r}")

    def check_logger_installed(self, where=lambda key: key) -> "TrainConfig":
        """The logger's package is importable here (checked where the run trains, and by a
        launch before it submits; not by a plan, which may be made away from the cluster)."""
        import importlib.util

        packages = LOGGERS[self.logger]
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            raise UserError(f"{where('logger')} {self.logger}: the {packages[0]} package is not installed "
                            f"(pip install {packages[0]}), or choose none, csv or tensorboard")
        return self

    @classmethod
    def build(cls, values: dict, where=lambda key: key) -> "TrainConfig":
        """The one way an entry point makes a config from what a user wrote (CLI flags, a sweep
        file, a stored record): unknown keys and values outside LIMITS are refused in one line
        that names the setting as `where(key)` spells it for that entry point."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"unknown training setting(s): {', '.join(where(k) for k in unknown)}")
        try:
            return cls(**values)
        except ConfigError as e:
            raise e.named(where) from None

    def updated(self, where=lambda key: key, **changes) -> "TrainConfig":
        """dataclasses.replace, with a refused value named as `where` spells it."""
        return self.build({**self.to_dict(), **changes}, where)

    def whole_batches(self, tokens: float, what: str = "token budget", batch_size: int | None = None) -> int:
        """`tokens` rounded down to whole batches of this config (a run trains whole optimizer
        steps), or of `batch_size` sequences; UserError when not even one batch fits. The one
        owner of that rule: the trainer's plan, sweep files and tune all ask here."""
        batch = self.batch_size if batch_size is None else batch_size
        bt = batch * self.seq_len
        if tokens < bt:
            raise UserError(f"{what}: {format_count(tokens)} tokens is less than one batch "
                            f"({batch} x {self.seq_len} = {bt:,} tokens)")
        return int(tokens // bt) * bt

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where=lambda key: key) -> "TrainConfig":
        """A stored config (run.json, a job's pickle): checked as every config is."""
        return cls.build(d, where)

    @property
    def tokens_per_step(self) -> int:
        """Source tokens per optimizer step: the global batch (over all processes) x seq_len.
        The one definition: the trainer's plan, a sweep's budgets, tune and status use it."""
        return self.batch_size * self.seq_len

    def identity(self) -> dict:
        """The fields that define WHAT is trained; a run directory may only be resumed with
        the same identity. Execution details (progress bar, logging cadence, device, how many
        processes share a batch and in how many pieces, recomputed or not) may change: the batch
        is global, so a run preempted on 8 GPUs may resume on 4; a sharded run (fsdp) resumes
        sharded, on any number of processes. The tasks
        scored (eval) measure the run and train nothing: a run resumed with other tasks scores
        those from then on."""
        d = self.to_dict()
        for k in ("out", "progress", "logger", "log_every", "checkpoint_every_s", "device", "compile", "extra",
                  "devices", "num_nodes", "micro_batch", "keep_weights", "activation_checkpointing", "eval",
                  "branch_from", "branch_steps"):
            d.pop(k, None)
        if d.get("strategy") != "fsdp":
            # auto and ddp train and checkpoint alike (one file); a sharded run's checkpoint is a
            # folder of shards, so an fsdp run resumes as fsdp only (on any number of processes).
            d.pop("strategy", None)
        if d.get("data") not in (None, "", "default"):
            # One shard directory, however it was spelled: sweeps record it absolute now, runs
            # launched before recorded it relative to the folder they were launched from.
            d["data"] = os.path.abspath(d["data"])
        return d
