"""One training run, end to end, with Lightning.

    TrainingRun(cfg).fit()  ->  the run.json record

What a run guarantees (see rundir.py for the files):
* the learning-rate schedule (warmup, then cosine to 10% of peak) ends exactly at the run's
  own token budget, as Chinchilla requires;
* example i of the run is a pure function of (seed, i) and the data position is part of the
  checkpoint, so a killed run resumes where it stopped and sees exactly the tokens it had
  not seen yet; a completed run is never retrained;
* a NaN/inf loss stops the run with status "diverged"; an exception marks it "failed" with
  the error's first line; run.json and metrics.parquet are written atomically.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from scaling import __version__
from scaling.base.config import TrainConfig, parse_count
from scaling.base.errors import UserError, WriteError
from scaling.train.model import ModelConfig, objective_lengths
from scaling.data.shards import resolve_data  # noqa: F401  (re-exported)
from scaling.base.shapes import model_config
from scaling.data.objectives import ObjectiveConfig
from scaling.base.rundir import (
    CKPT_DIR,
    LAST_CKPT,
    METRICS,
    RUN_JSON,
    RunStatus,
    atomic_write_json,
    last_checkpoint,
    read_run_json,
    stale_temp_files,
    write_metrics,
)
from scaling.base.signals import checkpoint_signal_held
from scaling.base.threads import threads_for



def lr_rule(n_params_nonembed: int) -> float:
    """Peak learning rate by rule of N rather than by search (OLMo's ladder: lr ∝ N^-1/3),
    anchored at 2e-3 for 10M non-embedding parameters (1.6e-4 at AlexaTM's 20B, whose
    paper used 1e-4). Per-size tuning with `scaling tune` refines it."""
    return min(6e-3, 2e-3 * (max(n_params_nonembed, 1) / 1e7) ** (-1 / 3))


def val_schedule(total_steps: int, points: int) -> list[int]:
    """Steps at which validation runs: log-spaced over the run, always including the last
    step, plus step 0 (the untrained model), so Approach 1 gets a loss curve per run."""
    if total_steps <= 1 or points <= 1:
        return [0, total_steps]
    first = max(1, total_steps // 2 ** (points - 1))
    steps = np.unique(np.round(np.geomspace(first, total_steps, points)).astype(int))
    return [0] + [int(s) for s in steps]


# ---------------------------------------------------------------- device peak
_cpu_peak_cache: dict[int, float] = {}


def measure_cpu_peak(seconds: float = 0.3) -> float:
    """fp32 matmul FLOP/s of this machine at torch's current thread count.

    Measured once per machine and thread count, on the best of several short trials, and
    kept in the cache ($SCALING_CACHE/cpu-peak.json): a peak re-measured at the start of
    each run beside other work reads low and makes MFU meaningless."""
    import json

    from scaling.data.corpus import cache_root

    threads = torch.get_num_threads()
    if threads in _cpu_peak_cache:
        return _cpu_peak_cache[threads]
    key = f"{platform.processor() or platform.machine()}|{os.cpu_count()}|{threads}|{torch.__version__}"
    path = cache_root() / "cpu-peak.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = 0.0
        for _ in range(5):  # best of five: other work only ever makes a trial slower
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                a @ b
                reps += 1
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
        known[key] = best
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, known)
        except OSError:
            pass  # a read-only cache only costs a re-measurement next time
    _cpu_peak_cache[threads] = float(known[key])
    return _cpu_peak_cache[threads]


def device_peak(device: str, precision: str) -> tuple[float, str]:
    """(peak FLOP/s, device name) used for MFU."""
    if device == "cuda":
        from scaling.base.cost import PEAK_BF16, peak_bf16

        name = torch.cuda.get_device_name()
        peak = peak_bf16(name)
        if peak is not None:
            return (peak if "bf16" in precision else peak / 2), name
        return PEAK_BF16["H100"], name   # an unknown GPU: taken as an H100
    return measure_cpu_peak(), f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ------------------------------------------------------------------ the data
# ------------------------------------------------------------------ the plan
@dataclass
class RunPlan:
    model: ModelConfig
    steps: int
    tokens_per_step: int
    warmup_steps: int
    lr: float
    val_steps: list[int]
    flops_per_step: float
    enc_len: int
    dec_len: int
    world: int           # processes sharing each batch (devices x num_nodes)
    batch_size: int      # global sequences per optimizer step
    micro_batch: int     # sequences per process per forward/backward
    accum: int           # micro-batches per process per step (gradient accumulation)
    tokens_budget: int


def make_plan(cfg: TrainConfig, vocab_size: int) -> RunPlan:
    model = model_config(cfg.params, vocab_size, cfg.seq_len, cfg.tied_embeddings)
    enc_len, dec_len = objective_lengths(cfg.seq_len, cfg.noise_density)
    world = cfg.devices * cfg.num_nodes
    share = cfg.batch_size // world            # TrainConfig.check: a multiple of world
    micro = cfg.micro_batch or share
    tokens_per_step = cfg.tokens_per_step
    budget = parse_count(cfg.tokens, "token budget")
    steps = cfg.whole_batches(budget, "token budget") // tokens_per_step
    lr = cfg.lr if cfg.lr is not None else lr_rule(model.n_params(embeddings=False))
    return RunPlan(
        model=model, steps=steps, tokens_per_step=tokens_per_step,
        warmup_steps=max(1, round(cfg.warmup_frac * steps)), lr=lr,
        val_steps=val_schedule(steps, cfg.val_points),
        flops_per_step=float(model.train_flops(enc_len, dec_len)) * cfg.batch_size,
        enc_len=enc_len, dec_len=dec_len, world=world, batch_size=cfg.batch_size, micro_batch=micro,
        accum=share // micro, tokens_budget=budget,
    )


# ------------------------------------------------------------------ the run
class TrainingRun:
    """One run directory, trained to its budget. `fit()` is safe to call again: it resumes
    from checkpoints/last.ckpt, and returns a completed run's record without retraining."""

    def __init__(self, cfg: TrainConfig, on_validation=None):
        self.cfg = cfg
        # on_validation(step, val_row) -> True stops the run there as "pruned" (a tuner's
        # pruner). Single-process runs only: ranks would not agree on the verdict.
        self.on_validation = on_validation
        self.run_dir = Path(cfg.out)
        self.module = None
        self.trainer = None
        self.checkpointed_for_requeue = False   # set by save_checkpoint (submitit's USR2 path)
        from scaling.train.distributed import Process

        self.process = Process(0, 1, 0, 0, "single")   # set by fit()
        self.set_aside: list[str] = []   # corrupt files of the run found by this start

    def _check_existing(self) -> dict | None:
        try:
            rec = read_run_json(self.run_dir)
        except UserError as e:
            # A truncated or edited run.json: say where, keep it aside for a post-mortem, and
            # go on as a run without a record (from its checkpoint if it has a good one).
            rec = None
            self._set_aside(self.run_dir / RUN_JSON, str(e))
        if rec is None:
            if self.run_dir.exists() and any(p.name not in _RUN_FILES and not p.name.endswith(_ASIDE)
                                             for p in self.run_dir.iterdir() if not p.name.startswith(".")):
                raise UserError(f"{self.run_dir}: directory exists and is not a run directory (no {RUN_JSON}); choose another --out")
            return None
        try:
            old = TrainConfig.from_dict({**rec.get("config", {}), "out": self.cfg.out})
        except (UserError, TypeError) as e:
            raise UserError(f"{self.run_dir / RUN_JSON}: unreadable config ({e})") from None
        a, b = old.identity(), self.cfg.identity()
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            detail = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:4])
            raise UserError(f"{self.run_dir}: existing run has a different config ({detail}); use a new --out")
        return rec

    def _set_aside(self, path: Path, why: str) -> None:
        """Rename a corrupt file of the run to NAME.corrupt (kept for a post-mortem) and say so
        on stderr, with its path; the run then carries on without it."""
        aside = path.with_name(path.name + _ASIDE)
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            pass   # another rank of this run moved it first
        except OSError as e:
            raise WriteError(f"{path}: {why}, and it cannot be moved aside ({os.strerror(e.errno)})") from None
        self.set_aside.append(f"{why}; moved to {aside.name}")
        print(f"warning: {why}; moved to {aside}", file=sys.stderr)

    def _good_checkpoint(self, main: bool = True) -> Path | None:
        """checkpoints/last.ckpt if it is whole. Every write is atomic, so a bad one is damage
        from outside (a disk, a copy, a hand): it is set aside and the run starts from scratch,
        which is the last state that can be trusted. A torch checkpoint is a zip archive: its
        directory and every member's CRC are checked (one read of the file, which the load
        that follows then finds in the page cache). Every rank of a DDP run checks, and comes
        to the same verdict; only the main one cleans up and moves files."""
        import zipfile

        for tmp in stale_temp_files(self.run_dir / CKPT_DIR) if main else []:
            tmp.unlink(missing_ok=True)   # a write killed half-way: never read, only in the way
        path = last_checkpoint(self.run_dir)
        if path is None:
            return None
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            why = None if bad is None else f"member {bad} fails its CRC check"
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            why = f"{type(e).__name__}: {e}"
        if why is None:
            return path
        if main:
            self._set_aside(path, f"{path}: checkpoint is corrupt ({why}); training restarts from step 0")
        return None

    def fit(self) -> dict:
        with checkpoint_signal_held():
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.cfg
        rec = self._check_existing()
        if rec is not None and RunStatus.of(rec).finished:
            return rec   # completed, diverged or pruned: never trained again
        from scaling.train import distributed

        proc = distributed.current()
        world = cfg.devices * cfg.num_nodes
        distributed.check_world(proc, world)
        self.process = proc
        shards_dir = resolve_data(cfg.data)
        from scaling.data.shards import TokenShards

        train_shards = TokenShards.open(shards_dir, "train")
        plan = make_plan(cfg, train_shards.vocab_size)
        if world > 1 and proc.source == "single":
            # Nobody started the other processes (a plain `scaling train --devices 2`, a
            # notebook, tune, the demo): this process supervises `world` workers.
            return self._supervise(world)
        obj_cfg = ObjectiveConfig(
            seq_len=cfg.seq_len, clm_ratio=cfg.clm_ratio, noise_density=cfg.noise_density, mean_span=cfg.mean_span,
            pad_id=train_shards.meta.get("pad_id", 0), eos_id=train_shards.meta.get("eos_id", 1),
            clm_id=train_shards.meta.get("clm_id", 2),
        )
        if train_shards.n_tokens < cfg.seq_len:
            raise UserError(f"{shards_dir}: training split has {train_shards.n_tokens} tokens, fewer than one window of {cfg.seq_len}")
        ckpt_path = self.run_dir / CKPT_DIR / LAST_CKPT
        resume_from = self._good_checkpoint(proc.is_main)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {
            "name": self.run_dir.name,
            "status": RunStatus.RUNNING.value,
            "config": cfg.to_dict(),
            "model": plan.model.to_dict(),
            "model_shape": plan.model.describe(),
            "n_params": plan.model.n_params(),
            "n_params_nonembed": plan.model.n_params(embeddings=False),
            "tokens_budget": plan.tokens_budget,
            "tokens_seen": 0,
            "steps": plan.steps,
            "tokens_per_step": plan.tokens_per_step,
            "world_size": plan.world,
            "batch_per_rank": plan.batch_size // plan.world,
            "micro_batch": plan.micro_batch,
            "accumulation": plan.accum,
            "lr": plan.lr,
            "flops": 0.0,
            "flops_per_token": plan.flops_per_step / plan.tokens_per_step,
            "flops_6nd_per_token": 6.0 * plan.model.n_params(),
            "data": str(shards_dir),
            "val": None,
            "wall_time_s": None,
            "error": None,
            "device": None,
            "restarts": (rec or {}).get("restarts", -1) + 1 if rec else 0,
            "started_at": (rec or {}).get("started_at", now),
            "finished_at": None,
            "versions": _versions(),
            "host": platform.node(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            # One entry per status an attempt took (started, then how it ended): a requeued or
            # relaunched run shows each start and stop, with its step, time and job.
            "history": list((rec or {}).get("history") or []),
            "set_aside": list((rec or {}).get("set_aside") or []) + self.set_aside,
        }
        # The step this start resumes from is known once the checkpoint is read (RunRecorder's
        # on_start replaces this entry); a start that fails before that keeps it unknown.
        self._mark(record, RunStatus.RUNNING, None)
        self._write_record(record)   # makes the run directory (rundir.atomic_file)   # rank 0 only: the run has one record, whatever its world
        try:
            self._train(plan, shards_dir, obj_cfg, ckpt_path, resume_from, record)
        except KeyboardInterrupt:
            record["error"] = "interrupted"
            self._mark(record, RunStatus.STOPPED, self._step())
            self._write_record(record)
            raise
        except WriteError:
            # The disk is full or the directory read-only: the record cannot say so either.
            # It keeps its last state ("running"), and the last checkpoint is intact (atomic
            # writes), so a rerun once there is room resumes from it.
            raise
        except BaseException as e:
            if isinstance(e, SystemExit) and e.code in (0, None):
                raise
            if isinstance(e, SystemExit) and self.checkpointed_for_requeue:
                # submitit's USR2 path: checkpoint() saved the position, the job was requeued,
                # then sys.exit(-1). Not a failure: a plain relaunch (or the requeued job) resumes.
                step = self._step()
                record["status"] = RunStatus.PREEMPTED.value
                record["error"] = f"preempted at step {step}: checkpointed and requeued; a relaunch resumes"
                self._mark(record, RunStatus.PREEMPTED, step)
                self._write_record(record)
                raise
            record["status"] = RunStatus.FAILED.value
            self._mark(record, RunStatus.FAILED, self._step())
            record["error"] = _first_line(e)
            record["traceback"] = traceback.format_exc(limit=20)
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            try:
                self._write_record(record)
            except WriteError:
                pass   # no room to record the failure: the original error is the one to raise
            raise
        return record

    def _train(self, plan, shards_dir, obj_cfg, ckpt_path, resume_from, record):
        import lightning as L

        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)  # no GPU/TPU banners, no tips
        # Our stream is resumable through the checkpoint (start_step); Lightning cannot know.
        # `srun` hint: submitit launches through srun; a plain `scaling train` on a machine
        # with Slurm installed is fine too.
        warnings.filterwarnings("ignore", message=".*(resum|IterableDataset|does not have many workers|srun|LeafSpec).*")
        cfg = self.cfg
        accel = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if accel == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but no GPU is visible")
        precision = cfg.precision
        if precision == "auto":
            precision = "bf16-mixed" if accel == "cuda" else "32-true"
        elif precision == "32":
            precision = "32-true"
        if accel == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 for anything left in fp32
        # Slurm here binds no CPUs: two 1-CPU jobs that each took every core ran ~9x slower
        # than with a thread each. threads_for caps at the cores granted.
        torch.set_num_threads(threads_for(plan.flops_per_step / (plan.world * plan.accum), accelerator=accel))
        record["threads"] = torch.get_num_threads()
        torch.manual_seed(cfg.seed)
        from scaling.train.loop import BatchStream, Checkpointing, EncoderDecoderModule, Progress, RunRecorder

        module = self.module = EncoderDecoderModule(cfg, plan)
        stream = BatchStream(str(shards_dir), obj_cfg, cfg.seed, plan)
        recorder = self.recorder = RunRecorder(cfg, plan, stream, str(shards_dir), obj_cfg)
        recorder.on_validation = self.on_validation

        def started(step: int) -> None:
            # The checkpoint is read: the status history says where this start resumed, at
            # once, so that it holds even for a start that is then killed.
            self._mark(record, RunStatus.RUNNING, step)
            self._write_record(record)
        recorder.on_start = started
        self.checkpointing = Checkpointing(cfg, plan, ckpt_path)
        # In this order at every micro-batch's end: record (and validate), then checkpoint and
        # let a pending USR2 in, then draw.
        callbacks = [recorder, self.checkpointing, Progress(plan, recorder, cfg.progress)]
        from scaling.train.distributed import lightning_environment

        plugins = []
        env = lightning_environment(self.process)
        if env is not None:
            plugins.append(env)
        elif os.environ.get("SLURM_JOB_ID"):
            from lightning.pytorch.plugins.environments import SLURMEnvironment

            plugins.append(SLURMEnvironment(auto_requeue=False))  # submitit owns requeueing
        trainer = L.Trainer(
            accelerator="gpu" if accel == "cuda" else "cpu",
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy="ddp" if plan.world > 1 else "auto",
            precision=precision,
            max_steps=plan.steps,
            max_epochs=-1,
            accumulate_grad_batches=plan.accum,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            use_distributed_sampler=False,
            default_root_dir=str(self.run_dir),
            callbacks=callbacks,
            plugins=plugins or None,
        )
        self.trainer = trainer
        loader = torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=1 if accel == "cuda" else 0,
            pin_memory=accel == "cuda", persistent_workers=False,
        )
        t0 = time.monotonic()
        # The run installs its own SIGINT/SIGTERM handlers (on_train_start); an in-process
        # caller (tune --jobs 1, the demo, a notebook) gets its own back when the run ends.
        saved = _signal_handlers()
        try:
            trainer.fit(module, train_dataloaders=loader, ckpt_path=str(resume_from) if resume_from else None)
        finally:
            _restore_signal_handlers(saved)
        step = trainer.global_step
        record["tokens_seen"] = step * plan.tokens_per_step
        record["flops"] = step * plan.flops_per_step
        record["wall_time_s"] = recorder.elapsed_before + time.monotonic() - t0
        record["device"] = recorder.device_name
        record["precision"] = precision
        record["last_train_loss"] = recorder.last_loss
        record["data_digest"] = f"{recorder.digest() & (2**64 - 1):016x}"
        if recorder.final_val is not None:
            v = recorder.final_val
            record["val"] = {
                "mixed": {"loss": v["val_loss"], "bpb": v["val_bpb"], "se": v["val_se"]},
                "denoise": {"loss": v["val_loss_denoise"], "bpb": v["val_bpb_denoise"]},
                "clm": {"loss": v["val_loss_clm"], "bpb": v["val_bpb_clm"]},
            }
        if trainer.global_rank == 0:
            write_metrics(self.run_dir, recorder.rows)
        if recorder.diverged:
            record["status"] = RunStatus.DIVERGED.value
            record["error"] = recorder.diverged
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        elif recorder.pruned:
            record["status"] = RunStatus.PRUNED.value
            record["error"] = f"pruned at step {step} of {plan.steps} by its caller (a tuner's pruner)"
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        elif step >= plan.steps and recorder.final_val is not None:
            record["status"] = RunStatus.COMPLETED.value
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if ckpt_path.exists() and trainer.global_rank == 0:
                ckpt_path.unlink()  # the weights of a finished run are not needed for the fit
        else:
            # Stopped early (a signal or a clean interrupt): keep a checkpoint to resume from.
            self.checkpointing.save_last(trainer)
            record["error"] = f"stopped at step {step} of {plan.steps}; rerun to resume"
        self._mark(record, RunStatus.STOPPED if record["status"] == RunStatus.RUNNING else RunStatus(record["status"]), step)
        if trainer.global_rank == 0:
            self._write_record(record)

    def _step(self) -> int | None:
        return getattr(self.trainer, "global_step", None)

    def _mark(self, record: dict, status: RunStatus, step: int | None) -> None:
        """Add `status` to the record's history (run.json keeps every attempt's start and end)."""
        history = record["history"]
        if status == RunStatus.RUNNING and history and history[-1]["status"] == RunStatus.RUNNING and history[-1]["step"] is None:
            history.pop()   # this start, until now without its step (the checkpoint was unread)
        history.append({
            "status": status.value, "step": step,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "job": os.environ.get("SLURM_JOB_ID") or None,
        })

    def _write_record(self, record):
        if self.process.is_main:
            atomic_write_json(self.run_dir / RUN_JSON, record)

    def _supervise(self, world: int) -> dict:
        from scaling.train import distributed
        from scaling.base.threads import cpus_granted

        code = distributed.launch_workers(self.cfg.to_dict(), world, self.run_dir, cpus_granted())
        rec = read_run_json(self.run_dir)
        if code == 130 or (rec or {}).get("error") == "interrupted":
            raise KeyboardInterrupt
        if code != 0:
            why = (rec or {}).get("error") or f"worker exited with code {code}"
            raise RuntimeError(f"{self.run_dir}: run of {world} processes did not finish: {why}")
        if rec is None:
            raise RuntimeError(f"{self.run_dir}: the workers left no {RUN_JSON}")
        return rec

    def save_checkpoint(self) -> None:
        """For submitit's checkpoint(): save the exact position now (main thread)."""
        if self.trainer is not None and self.trainer.state.fn is not None:
            self.checkpointing.save_last(self.trainer)
            self.checkpointed_for_requeue = True

    @property
    def start_step(self) -> int:
        """The step this start resumed from (0 for a fresh run)."""
        rec = getattr(self, "recorder", None)
        return rec.start_step if rec is not None else 0


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What a run directory may hold (besides dotfiles and files set aside with _ASIDE).
_RUN_FILES = {RUN_JSON, METRICS, CKPT_DIR, "train.log"}
_ASIDE = ".corrupt"


def _signal_handlers() -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}


def _restore_signal_handlers(saved: dict) -> None:
    for sig, handler in saved.items():
        if handler is not None:        # None: set from C, not restorable from Python
            signal.signal(sig, handler)


def train_run(cfg: TrainConfig) -> dict:
    return TrainingRun(cfg).fit()


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


def _versions() -> dict:
    import lightning

    # str(): torch's version is a str subclass, and the record holds plain data only.
    return {
        "scaling": __version__, "torch": str(torch.__version__), "lightning": lightning.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
    }
