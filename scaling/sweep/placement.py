"""Which strategy and micro-batch each run of a sweep takes on its GPUs, before anything runs.

For a run on GPUs (`[executor] gpus_per_node` > 0), the memory model (scaling/base/memory.py)
prices its training state and activations per GPU of `[executor] gpu_mem_gb` (80, an H100's,
when the file does not say). A run takes DDP where it fits, else FSDP over its world (one GPU:
no sharding to gain, only the micro-batch), and FSDP too where DDP fits only a micro-batch under
memory.DDP_MIN_MICRO sequences and FSDP fits a larger one; the micro-batch is the largest that divides each
process's share of the batch, at most the file's `micro_batch`, and fits. The pick is written
into the run's config (`strategy`, `micro_batch`), so the run trains as planned. A run that
fits under no strategy, even one sequence at a time, is refused with one line naming it and
what would make it fit (more GPUs only where sharding can use them), before anything is submitted: `sweep plan` and `sweep launch` both
load the file through here. Runs on CPUs are left as they are (no GPU memory to plan).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from scaling.base.config import format_count
from scaling.base.errors import UserError
from scaling.base.memory import GB, HEADROOM, MIN_GPU_GB, RESERVED_GB, Choice, choose, memory, usable_bytes
from scaling.base.shapes import run_lengths

DEFAULT_GPU_GB = 80.0   # an H100 (SXM or PCIe, 80 GB): the GPU the lab's figures are for


@dataclass(frozen=True)
class Placement:
    """A run's pick on its GPUs, as `sweep plan` shows it."""

    choice: Choice
    gpu_mem_gb: float
    assumed: bool          # gpu_mem_gb not in the file: DEFAULT_GPU_GB

    @property
    def label(self) -> str:
        """The strategy column: ddp or fsdp; `one GPU` where there is no second process."""
        return "one GPU" if self.choice.memory.world == 1 else self.choice.strategy


def place(path: Path, r, res, model) -> tuple[object, Placement | None]:
    """(the run with its strategy and micro-batch written, its placement); the run as it is and
    None on CPUs. `r` a RunSpec, `res` its Resources, `model` its ModelConfig. UserError when
    nothing fits."""
    if not res.gpus_per_node:
        return r, None
    cfg = r.config
    world = cfg.devices * cfg.num_nodes
    share = cfg.batch_size // world
    enc, dec = run_lengths(cfg.seq_len, cfg.noise_density, cfg.arch, cfg.clm_ratio)   # a decoder-only arch reads both
    precision = "32" if cfg.precision == "32" else "bf16-mixed"   # auto: bf16-mixed on a GPU
    gpu_gb = res.gpu_mem_gb or DEFAULT_GPU_GB
    if gpu_gb <= MIN_GPU_GB:
        raise UserError(f"{path}: executor.gpu_mem_gb = {gpu_gb:g} leaves the memory plan nothing: it keeps "
                        f"{HEADROOM:.0%} of a GPU and {RESERVED_GB:g} GB free, so a GPU must hold over "
                        f"{MIN_GPU_GB:.2f} GB (it is each GPU's memory in GB, e.g. 80 for an H100)")
    # One GPU: FSDP over a world of one shards nothing; the trainer's plain run it is.
    strategy = "ddp" if world == 1 and cfg.strategy == "auto" else cfg.strategy
    pick = choose(model, share, enc, dec, gpu_gb, world=world, precision=precision, strategy=strategy,
                  micro_batch=cfg.micro_batch, checkpointing=cfg.activation_checkpointing)
    if pick is None:
        raise UserError(_refusal(path, r, model, world, share, enc, dec, precision, gpu_gb, strategy, res))
    changes = {}
    if world > 1 and pick.strategy != cfg.strategy:
        changes["strategy"] = pick.strategy
    if pick.micro_batch != (cfg.micro_batch or share):
        changes["micro_batch"] = pick.micro_batch
    if changes:
        cfg = cfg.updated(lambda key: f"{path}: train.{key} (run {r.name}, as the memory plan picked it)", **changes)
    return replace(r, config=cfg), Placement(pick, gpu_gb, res.gpu_mem_gb is None)


def _refusal(path, r, model, world, share, enc, dec, precision, gpu_gb, strategy, res) -> str:
    """One line: the run, what it needs at the least, what it has, and what would make it fit."""
    cfg = r.config
    least = memory(model, 1, enc, dec, precision=precision, strategy="fsdp" if strategy == "auto" else strategy,
                   world=world, checkpointing=cfg.activation_checkpointing)
    fixes = []
    if not cfg.activation_checkpointing:
        ckpt = replace(least, checkpointing=True)
        if ckpt.total <= usable_bytes(gpu_gb):
            fixes.append("set train.activation_checkpointing = true")
    gpus = f"executor.gpus_per_node x executor.nodes, {world} GPU(s) now"
    if cfg.strategy == "ddp":
        # DDP copies everything onto every GPU: more of them cannot help a run it does not fit.
        fixes.append("let the plan shard it (train.strategy = \"auto\" or \"fsdp\")"
                     + ("" if world > 1 else f" over more GPUs ({gpus})"))
    else:
        # FSDP's state shrinks with the world: the GPUs that would hold it, activations aside.
        fixes.append(f"give it more GPUs ({gpus})")
    if res.gpu_mem_gb is None:
        fixes.append(f"state executor.gpu_mem_gb if its GPUs hold more than {DEFAULT_GPU_GB:.0f} GB")
    return (f"{path}: run {r.name} ({format_count(r.n_params)} parameters) does not fit its {gpu_gb:g} GB GPUs: "
            f"at the least {least.line()}, over the {usable_bytes(gpu_gb) / GB:.3g} GB a plan may use; "
            + "; or ".join(fixes))
