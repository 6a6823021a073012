"""Where jobs run: the three executors, what a job asks for, and one submitit executor per launch.

A sweep and a tune study both submit through here. `Resources` (the `[executor]` section of a
sweep file) and `SlurmSettings` (its `[slurm]` section) say what one job asks for;
`open_launch` makes a fresh launch folder (`<dir>/launches/<stamp>-<executor>`: Slurm job ids
restart at 1 when a cluster's state is wiped, and an old folder would hand back an old job's
result for a new id) and the submitit executor that writes into it. `local` runs jobs as
processes on this machine, `slurm` as one job array (sbatch must be on PATH: `require_sbatch`),
`debug` in-process. Parsing the TOML sections is sweep/spec.py's work; this module only holds
the settings and turns them into submitit parameters. submitit itself is imported only when an
executor is made, so planning commands start without it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling.base.cost import PEAK_BF16
from scaling.base.errors import UserError

EXECUTORS = ("local", "slurm", "debug")
LAUNCHES = "launches"   # <dir>/launches/<stamp>-<executor>/: one submitit folder per launch


@dataclass(frozen=True)
class Resources:
    """What one job asks for. Used by every executor: local runs honour cpus (threads),
    gpus and the time limit; Slurm gets all of it."""

    cpus_per_task: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 0          # DDP processes per node; 0 = one per GPU (1 without GPUs)
    nodes: int = 1
    mem_gb: float | None = None
    gpu_mem_gb: float | None = None  # memory of each GPU, for the plan's memory per GPU (None: 80)
    time_min: int = 24 * 60
    parallelism: int | None = None   # concurrent runs (local) / array parallelism (Slurm)
    default: str = "local"           # executor used when `launch` gets no --executor
    # Throughput model for `plan`'s time estimate, per job:
    #   time = overhead_s + tokens / max_tokens_per_s + FLOPs / achieved_flops
    # achieved_flops: FLOP/s the model's matmuls sustain; max_tokens_per_s: the rate with
    # free FLOPs (data, optimizer, framework per step: what limits tiny models); overhead_s:
    # start-up (imports, data, first validation). Measure yours with bench/.
    achieved_flops: float | None = None
    max_tokens_per_s: float | None = None
    overhead_s: float = 30.0

    @property
    def tasks(self) -> int:
        """Processes per node: each run is a DDP job of tasks x nodes processes."""
        return self.tasks_per_node or max(1, self.gpus_per_node)

    @property
    def world(self) -> int:
        return self.tasks * self.nodes

    def run_seconds(self, tokens: float, flops: float) -> float:
        t = self.overhead_s + flops / self.flops_per_s()
        return t + (tokens / self.max_tokens_per_s if self.max_tokens_per_s else 0.0)

    def flops_per_s(self) -> float:
        if self.achieved_flops:
            return self.achieved_flops
        if self.gpus_per_node:
            # Assumed: an H100's bf16 dense peak (989 TFLOP/s) at 40% MFU, per GPU.
            return 0.4 * PEAK_BF16["H100"] * self.gpus_per_node * self.nodes
        # Assumed: ~1e11 FLOP/s per CPU core (measured ~1.5-2.7e11 on 2 laptop-class cores
        # for 1M-10M models: 20-40k tokens/s at 1M, 5k tokens/s at 10M), every process's cores.
        return 1e11 * self.cpus_per_task * self.world

    def concurrent(self) -> int:
        if self.parallelism:
            return self.parallelism
        return max(1, (os.cpu_count() or 1) // max(1, self.cpus_per_task * self.tasks))


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    signal_delay_s: int = 90         # USR2 this long before the time limit: checkpoint, requeue
    max_num_timeout: int = 3         # requeues after a time limit / preemption
    setup: tuple[str, ...] = ()      # shell lines run before each job (module load ...)
    options: dict = field(default_factory=dict)  # common sbatch options by name: {gres = "gpu:2", ...}
    extra: dict = field(default_factory=dict)  # any other sbatch option: {exclusive = "", ...}


# sbatch options a [slurm] section takes by name (sbatch's long option, "_" for "-"); the rest
# go in `extra`. Each becomes `#SBATCH --<name>=<value>` (true: the bare flag).
SBATCH_OPTIONS = ("gres", "gpus", "gpus_per_task", "cpus_per_gpu", "mem_per_cpu", "mem_per_gpu",
                  "reservation", "exclusive", "exclude", "nodelist", "licenses", "comment", "mail_type",
                  "mail_user", "dependency", "begin", "wckey", "hint", "distribution", "requeue")
# The sweep-file key behind each sbatch option submitit writes (a refusal names the key).
SBATCH_KEYS = {"partition": "slurm.partition", "account": "slurm.account", "qos": "slurm.qos",
               "constraint": "slurm.constraint", "time": "executor.time", "mem": "executor.mem_gb",
               "cpus_per_task": "executor.cpus_per_task", "gpus_per_node": "executor.gpus_per_node",
               "nodes": "executor.nodes", "ntasks_per_node": "executor.tasks_per_node",
               **{k: f"slurm.{k}" for k in SBATCH_OPTIONS}}


@dataclass(frozen=True)
class ExecutorSettings:
    """What make_executor reads: the [executor] and [slurm] settings (a Sweep has both too)."""

    resources: Resources = field(default_factory=Resources)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


def check_executor(kind: str) -> str:
    """The executor's name, or UserError naming the three there are."""
    if kind not in EXECUTORS:
        raise UserError(f"--executor {kind!r}: must be one of {', '.join(EXECUTORS)}")
    return kind


def require_sbatch(kind: str) -> None:
    """Slurm jobs need sbatch on PATH (a login node); the other executors need nothing."""
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise UserError("--executor slurm: sbatch not found; is this a Slurm login node? "
                        "(slurm/start.sh starts a local cluster)")


def launch_stamp(kind: str) -> str:
    """The name a launch folder made now gets (a dry run shows it)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}"


def new_launch_folder(dir: Path, kind: str) -> Path:
    """A fresh, empty DIR/launches/<stamp>-<kind>[-i] folder for one launch's submitit files."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(dir) / LAUNCHES
    for i in range(1000):
        name = f"{stamp}-{kind}" + (f"-{i}" if i else "")
        if not (base / name).exists():
            (base / name).mkdir(parents=True)
            return base / name
    raise UserError(f"{base}: cannot create a fresh launch folder")


def make_executor(kind: str, folder: Path, settings, job_name: str, hold: bool = False):
    """A submitit executor writing into `folder`; `settings` has .resources and .slurm (an
    ExecutorSettings, or a Sweep). `hold`: Slurm jobs are submitted held (`--hold`), for the
    launcher to name each array task before any starts (jobs/sbatch.py)."""
    import submitit

    res, sl = settings.resources, settings.slurm
    if kind == "slurm":
        require_sbatch(kind)
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=sl.max_num_timeout)
        ex.update_parameters(**slurm_parameters(settings, job_name, hold))
        return ex
    if kind == "local":
        ex = submitit.AutoExecutor(folder=folder, cluster="local")
        params = dict(name=job_name, timeout_min=res.time_min, tasks_per_node=res.tasks,
                      local_setup=[f"export OMP_NUM_THREADS={res.cpus_per_task} OMP_WAIT_POLICY=PASSIVE"])
        if res.gpus_per_node:
            params["gpus_per_node"] = res.gpus_per_node
        ex.update_parameters(**params)
        return ex
    if kind == "debug":
        return submitit.AutoExecutor(folder=folder, cluster="debug")
    check_executor(kind)
    raise AssertionError(kind)   # unreachable: check_executor raised


def slurm_parameters(settings, job_name: str, hold: bool = False) -> dict:
    """What one Slurm job asks for, as submitit's AutoExecutor parameters (`settings` has
    .resources and .slurm): the launch's executor and the dry run's script read the same."""
    res, sl = settings.resources, settings.slurm
    params = dict(
        name=job_name, timeout_min=res.time_min, cpus_per_task=res.cpus_per_task, nodes=res.nodes,
        tasks_per_node=res.tasks,  # one DDP process per GPU (or per tasks_per_node on CPUs)
        slurm_array_parallelism=res.parallelism or 256,
        slurm_signal_delay_s=sl.signal_delay_s,
        # The cluster may not bind CPUs: cap torch's threads at what the job was given.
        # sbatch hands the job the submitting shell's environment: a MASTER_PORT left there by a
        # DDP run in that shell or notebook would give every multi-task job on a node one stale
        # rendezvous port (EADDRINUSE once anything holds it). Lightning's SLURMEnvironment
        # derives address and port from the job itself; a site's own `setup` lines still win.
        slurm_setup=["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} OMP_WAIT_POLICY=PASSIVE",
                     "unset MASTER_ADDR MASTER_PORT", *sl.setup],
        # One task that exits with an error (a rank that could not rendezvous, an exception)
        # ends the job: srun would otherwise leave its peers waiting on a collective or the
        # rendezvous (30 minutes by default) while the job holds its nodes.
        slurm_srun_args=["--kill-on-bad-exit=1"],
    )
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.mem_gb is not None:
        params["mem_gb"] = res.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(sl, key):
            params[f"slurm_{key}"] = getattr(sl, key)
    if sl.options or sl.extra or hold:
        params["slurm_additional_parameters"] = {**sl.options, **sl.extra, **({"hold": True} if hold else {})}
    return params


@dataclass
class Launch:
    """One launch: its fresh folder, the job name every job of it carries (unique per
    launch: it tells a recycled Slurm job id from ours), and the executor."""

    kind: str
    folder: Path
    job_name: str
    executor: object


def open_launch(kind: str, dir: Path, settings, name: str) -> Launch:
    """A new launch folder under DIR/launches and its executor; jobs are named NAME-<folder>."""
    folder = new_launch_folder(dir, kind)
    job_name = f"{name}-{folder.name}"
    return Launch(kind, folder, job_name, make_executor(kind, folder, settings, job_name))
