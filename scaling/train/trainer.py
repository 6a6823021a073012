"""The Lightning Trainer of a run, wired once: the accelerator and precision a config asks for,
the thread count (base/threads.py decides), the cluster environment (lightning_environment:
the one place Slurm is told to Lightning), DDP when the run has several processes or FSDP2 when
it asks (strategy_for), the optional logger a run asks for (make_logger), and none of
Lightning's own checkpointing or validation loops: the callbacks (scaling/train/callbacks/) own
those, and send the logger its metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings

import lightning as L
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import ModelParallelStrategy

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError
from scaling.base.threads import threads_for
from scaling.train.distributed import Process
from scaling.train.schedule import RunPlan
from scaling.train.stream import BatchStream


def accelerator_and_precision(cfg: TrainConfig) -> tuple[str, str]:
    accel = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if accel == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no GPU is visible")
    precision = {"auto": "bf16-mixed" if accel == "cuda" else "32-true", "32": "32-true"}.get(cfg.precision, cfg.precision)
    return accel, precision


def build_trainer(cfg: TrainConfig, plan: RunPlan, process: Process, callbacks: list, run_dir) -> tuple[L.Trainer, str, str]:
    """(trainer, accelerator, precision) for this process of the run."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no GPU/TPU banners, no tips
    # Our stream is resumable through the checkpoint (start_step); Lightning cannot know.
    # `srun` hint: submitit launches through srun; a plain `scaling train` on a machine
    # with Slurm installed is fine too.
    warnings.filterwarnings("ignore", message=".*(resum|IterableDataset|does not have many workers|srun|LeafSpec).*")
    accel, precision = accelerator_and_precision(cfg)
    if accel == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for anything left in fp32
    # Slurm here binds no CPUs: two 1-CPU jobs that each took every core ran ~9x slower than
    # with a thread each. threads_for caps at the cores granted.
    torch.set_num_threads(threads_for(plan.flops_per_step / (plan.world * plan.accum), accelerator=accel,
                                      default=torch.get_num_threads()))
    env = lightning_environment(process)
    trainer = L.Trainer(
        accelerator="gpu" if accel == "cuda" else "cpu", devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=strategy_for(cfg, plan), precision=precision,
        max_steps=plan.steps, max_epochs=-1, accumulate_grad_batches=plan.accum,
        logger=make_logger(cfg, run_dir), enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False,
        default_root_dir=str(run_dir), callbacks=callbacks, plugins=[env] if env is not None else None,
    )
    return trainer, accel, precision


def strategy_for(cfg: TrainConfig, plan: RunPlan):
    """DDP for several processes, nothing for one; `strategy = "fsdp"`: Lightning's
    ModelParallelStrategy with every process on the data-parallel axis (no tensor
    parallelism), which calls EncoderDecoderModule.configure_model to shard the model
    (sharding.py), and saves checkpoints as one shard per process (torch.distributed.checkpoint)."""
    if cfg.strategy == "fsdp":
        return ModelParallelStrategy(data_parallel_size=plan.world, tensor_parallel_size=1,
                                     save_distributed_checkpoint=True)
    return "ddp" if plan.world > 1 else "auto"


def make_logger(cfg: TrainConfig, run_dir):
    """The run's optional Lightning logger (`logger` in the config), writing under
    RUN/logs/<kind>/; False for none. wandb runs offline unless WANDB_MODE says otherwise,
    mlflow into a file store in the run directory unless MLFLOW_TRACKING_URI names a server:
    a run on a cluster node without network access must not hang on a login. The metrics
    reach it through callbacks/logger.py (MetricsLogging)."""
    kind = cfg.logger
    if kind == "none":
        return False
    cfg.check_logger_installed()
    from pathlib import Path

    logs = Path(run_dir) / "logs"
    name = Path(cfg.out).name
    group = (cfg.extra or {}).get("sweep") or "scaling"
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(logs), name="", version="csv")
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(logs), name="", version="tensorboard", default_hp_metric=False)
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        online = os.environ.get("WANDB_MODE", "offline") == "online"
        return WandbLogger(name=name, project=group, save_dir=str(logs), offline=not online)
    from lightning.pytorch.loggers import MLFlowLogger

    uri = os.environ.get("MLFLOW_TRACKING_URI") or (logs / "mlruns").resolve().as_uri()
    return MLFlowLogger(experiment_name=group, run_name=name, tracking_uri=uri)


def lightning_environment(proc: Process):
    """The Lightning ClusterEnvironment for this process: None for a lone process outside
    Slurm. The one place Slurm is told to Lightning: under Slurm (one task or several)
    Lightning's own SLURMEnvironment, with requeueing left to submitit, which owns it."""
    if proc.source == "slurm" or (proc.source == "single" and os.environ.get("SLURM_JOB_ID")):
        return SLURMEnvironment(auto_requeue=False)
    if proc.source == "single":
        return None

    class Given(ClusterEnvironment):
        """Ranks fixed by whoever started the processes (submitit local, launch_workers)."""

        @property
        def creates_processes_externally(self) -> bool:
            return True

        @property
        def main_address(self) -> str:
            return proc.addr

        @property
        def main_port(self) -> int:
            return proc.port

        @staticmethod
        def detect() -> bool:
            return True

        def world_size(self) -> int:
            return proc.world

        def set_world_size(self, size: int) -> None:
            pass

        def global_rank(self) -> int:
            return proc.rank

        def set_global_rank(self, rank: int) -> None:
            pass

        def local_rank(self) -> int:
            return proc.local_rank

        def node_rank(self) -> int:
            return proc.node_rank

    return Given()


def loader(stream: BatchStream, accel: str) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1 if accel == "cuda" else 0,
                                       pin_memory=accel == "cuda", persistent_workers=False)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def own_stop_signals():
    """The run installs its own SIGINT/SIGTERM handlers (Checkpointing.on_train_start); an
    in-process caller (tune --jobs 1, the demo, a notebook) gets its own back when it ends."""
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS} if main else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:        # None: set from C, not restorable from Python
                signal.signal(sig, handler)
