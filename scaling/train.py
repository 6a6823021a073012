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
import math
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
from scaling.config import TrainConfig, parse_count
from scaling.errors import UserError
from scaling.model import IGNORE_INDEX, EncoderDecoder, ModelConfig, objective_lengths
from scaling.data import resolve_data  # noqa: F401  (re-exported)
from scaling.shapes import model_config
from scaling.objectives import MixedObjective, ObjectiveConfig
from scaling.rundir import (
    CKPT_DIR,
    LAST_CKPT,
    METRICS,
    RUN_JSON,
    atomic_write_json,
    last_checkpoint,
    read_run_json,
    write_parquet_atomic,
)
from scaling.signals import checkpoint_signal_held

VAL_SEED = 1234  # validation examples are the same for every run, whatever its seed
VAL_CHUNK = 64   # validation examples per forward pass (memory only: the examples are fixed)


def lr_rule(n_params_nonembed: int) -> float:
    """Peak learning rate by rule of N rather than by search (OLMo's ladder: lr ∝ N^-1/3),
    anchored at 2e-3 for 10M non-embedding parameters (1.6e-4 at AlexaTM's 20B, whose
    paper used 1e-4). Per-size tuning with `scaling tune` refines it."""
    return min(6e-3, 2e-3 * (max(n_params_nonembed, 1) / 1e7) ** (-1 / 3))


def lr_at(step: int, peak: float, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup, then cosine from peak down to min_ratio * peak at step == total."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def val_schedule(total_steps: int, points: int) -> list[int]:
    """Steps at which validation runs: log-spaced over the run, always including the last
    step, plus step 0 (the untrained model), so Approach 1 gets a loss curve per run."""
    if total_steps <= 1 or points <= 1:
        return [0, total_steps]
    first = max(1, total_steps // 2 ** (points - 1))
    steps = np.unique(np.round(np.geomspace(first, total_steps, points)).astype(int))
    return [0] + [int(s) for s in steps]


# ---------------------------------------------------------------- device peak
_PEAKS_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12, "V100": 125e12}
_cpu_peak_cache: dict[int, float] = {}


def measure_cpu_peak(seconds: float = 0.3) -> float:
    """fp32 matmul FLOP/s of this machine at torch's current thread count.

    Measured once per machine and thread count, on the best of several short trials, and
    kept in the cache ($SCALING_CACHE/cpu-peak.json): a peak re-measured at the start of
    each run beside other work reads low and makes MFU meaningless."""
    import json

    from scaling.corpus import cache_root

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
        name = torch.cuda.get_device_name()
        for key, peak in _PEAKS_BF16.items():
            if key in name:
                return (peak if "bf16" in precision else peak / 2), name
        return 989e12, name
    return measure_cpu_peak(), f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ------------------------------------------------------------------ the data
def example_hashes(idx: np.ndarray) -> np.ndarray:
    """An odd 64-bit number per example index (as int64): the weights of the data digest."""
    from scaling.objectives import _splitmix

    return (_splitmix(np.asarray(idx, dtype=np.uint64) + np.uint64(0x5CA1AB1E)) | np.uint64(1)).view(np.int64)


class BatchStream(torch.utils.data.IterableDataset):
    """Yields this process's micro-batches (dicts of tensors) from step `start_step` on, forever.

    The global batch of step s is examples s*B ... s*B + B - 1, whatever the world size W:
    rank r takes its share of B / W, in `accum` micro-batches of `micro`. Each micro-batch
    carries the target-token count of the whole global batch (the loss's denominator) and
    each example's digest weight. Holds only paths and numbers so it pickles cheaply into a
    loader worker; the memory map is opened inside the iterating process.
    """

    def __init__(self, shards_dir: str, obj_cfg: ObjectiveConfig, seed: int, plan: "RunPlan"):
        super().__init__()
        self.shards_dir, self.obj_cfg, self.seed = shards_dir, obj_cfg, seed
        self.batch_size, self.micro, self.accum, self.world = plan.batch_size, plan.micro_batch, plan.accum, plan.world
        self.rank = 0
        self.start_step = 0

    def __iter__(self):
        from scaling.data import TokenShards

        shards = TokenShards.open(self.shards_dir, "train")
        obj = MixedObjective(shards.tokens, shards.doc_starts, self.obj_cfg, self.seed)
        step, B = self.start_step, self.batch_size
        share = B // self.world
        while True:
            n_tok = int(obj.target_counts(np.arange(step * B, step * B + B)).sum())
            for m in range(self.accum):
                first = step * B + self.rank * share + m * self.micro
                idx = np.arange(first, first + self.micro)
                b = {k: torch.from_numpy(v) for k, v in obj.batch(idx).items()}
                b["ex_hash"] = torch.from_numpy(example_hashes(idx))
                b["n_tok_step"] = torch.tensor(n_tok)
                yield b
            step += 1


# ------------------------------------------------------------ lightning module
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
    tokens_per_step = cfg.batch_size * cfg.seq_len
    budget = parse_count(cfg.tokens, "token budget")
    steps = budget // tokens_per_step
    if steps < 1:
        raise UserError(
            f"token budget {budget:,} is smaller than one batch ({cfg.batch_size} x {cfg.seq_len} tokens = {tokens_per_step:,})"
        )
    lr = cfg.lr if cfg.lr is not None else lr_rule(model.n_params(embeddings=False))
    return RunPlan(
        model=model, steps=steps, tokens_per_step=tokens_per_step,
        warmup_steps=max(1, round(cfg.warmup_frac * steps)), lr=lr,
        val_steps=val_schedule(steps, cfg.val_points),
        flops_per_step=float(model.train_flops(enc_len, dec_len)) * cfg.batch_size,
        enc_len=enc_len, dec_len=dec_len, world=world, batch_size=cfg.batch_size, micro_batch=micro,
        accum=share // micro, tokens_budget=budget,
    )


def build_lit_module(cfg: TrainConfig, plan: RunPlan, shards_dir: str, obj_cfg: ObjectiveConfig, ckpt_path: Path):
    import lightning as L

    class LitEncoderDecoder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = EncoderDecoder(plan.model)
            self.rows: list[dict] = []
            self.start_step = 0
            self.diverged = False
            self.final_val: dict | None = None
            self.elapsed_before = 0.0  # wall seconds of earlier attempts (resume)
            self._sums = None
            self._t_last = None
            self._step_last = 0
            self._t_ckpt = time.monotonic()
            self._peak, self.device_name = None, None
            self._loss_fn = self.model.token_losses
            self._val = None
            self._blocked = False
            self.data_digest = 0      # digest of every example trained on (see training_step)
            self._digest = None       # the same, as a tensor on the device, during training
            self._pending = None      # this rank's part of the current step's digest
            self._step_done = -1      # last optimizer step whose end was handled
            self._stop_asked = False  # Ctrl-C / SIGTERM seen by this process
            self.on_validation = None  # TrainingRun's hook, see there
            self.pruned = False

        # -- optimisation
        def configure_optimizers(self):
            decay, no_decay = [], []
            for name, p in self.model.named_parameters():
                (no_decay if p.ndim < 2 else decay).append(p)  # biases and norm gains: no decay
            groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
            fused = self.device.type == "cuda"
            opt = torch.optim.AdamW(groups, lr=plan.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: lr_at(s, 1.0, plan.steps, plan.warmup_steps, cfg.min_lr_ratio)
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def on_fit_start(self):
            # Ranks are known once the strategy is set up; the loader iterates after this.
            stream.rank = self.global_rank
            if cfg.compile and self.device.type == "cuda":
                self._loss_fn = torch.compile(self.model.token_losses)
            precision = str(self.trainer.precision)
            self._peak, self.device_name = device_peak(self.device.type, precision)

        def on_train_start(self):
            if os.environ.get("SLURM_JOB_ID"):
                # Lightning turns SIGTERM into a clean exit 0, which Slurm would record as a
                # completed job that is never requeued; let submitit's USR2 path own it.
                signal.signal(signal.SIGTERM, lambda s, f: print("SIGTERM received; waiting for USR2/kill", file=sys.stderr))
            elif threading.current_thread() is threading.main_thread():
                # A laptop run stopped with Ctrl-C or `kill`: finish the step, save a
                # checkpoint, say so in run.json (fit() does both); a second signal is abrupt.
                def stop(signum, frame):
                    if self._stop_asked:
                        raise KeyboardInterrupt
                    if self.global_rank == 0:
                        print(f"\n{signal.Signals(signum).name}: stopping after this step; rerun to resume", file=sys.stderr)
                    self._stop_asked = True   # acted on at the step's end, by every rank at once

                signal.signal(signal.SIGTERM, stop)
                signal.signal(signal.SIGINT, stop)
            self._t_last = time.monotonic()
            self._t_start = time.monotonic()
            self._step_last = self._step_done = self.global_step
            if self.global_step == 0 and not self.rows:
                self._validate(0)

        # -- the step
        def training_step(self, batch, batch_idx):
            # One micro-batch: this rank's share of the global batch, or a piece of it.
            labels = batch["labels"]
            losses = self._loss_fn(batch["enc"], batch["dec"], labels)
            mask = labels != IGNORE_INDEX
            n_tok = mask.sum()
            # The mean over the GLOBAL batch's target tokens, however it is split: Lightning
            # divides by the accumulation count and DDP averages over ranks, so the sum is
            # scaled back up by both. A 2-process run takes the 1-process run's gradient.
            loss = losses.sum() * (plan.world * plan.accum) / batch["n_tok_step"]
            with torch.no_grad():
                # Proof of the data position: the sum, over every example trained on, of its
                # index's odd weight times its position-weighted targets (mod 2^64). A sum is
                # the same over any split into ranks and micro-batches, so resumed, DDP and
                # uninterrupted runs of a config must all end with the same digest.
                w = torch.arange(1, labels.shape[1] + 1, device=labels.device)
                part = (batch["ex_hash"] * (labels.long() * w).sum(1)).sum()
                self._pending = part if self._pending is None else self._pending + part
                clm = batch["is_clm"][:, None]
                s = torch.stack([
                    (losses * ~clm).sum(), (mask & ~clm).sum(), (losses * clm).sum(), (mask & clm).sum(),
                    losses.sum(), n_tok,
                ]).double()
                self._sums = s if self._sums is None else self._sums + s
            return loss

        def on_before_optimizer_step(self, optimizer):
            # Clipping here rather than through Trainer(gradient_clip_val): Lightning refuses
            # to clip for fused AdamW, which needs no unscaling under bf16.
            if cfg.grad_clip and cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)

        def on_train_batch_start(self, batch, batch_idx):
            # Signals that ask for a checkpoint (submitit's USR2) are held back (TrainingRun.fit
            # blocks them before any thread starts) and let through only at the end of a step,
            # so a checkpoint never holds half an update.
            if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
                self._blocked = True

        def on_train_batch_end(self, outputs, batch, batch_idx):
            step = self.global_step
            if step == self._step_done:
                return  # a micro-batch inside a step (gradient accumulation): no boundary yet
            self._step_done = step
            stop = self._end_step(step)
            last = step >= plan.steps
            if step % cfg.log_every == 0 or last or step in plan.val_steps:
                self._log_train(step)
            if not self.diverged and step in plan.val_steps:
                self._validate(step)
                self._t_last = time.monotonic()  # keep validation out of tokens/s
                if self.on_validation is not None and self.on_validation(step, self.rows[-1]) and not last:
                    self.pruned = stop = True
            if self.diverged or stop:
                self.trainer.should_stop = True
            elif not last and (time.monotonic() - self._t_ckpt > cfg.checkpoint_every_s):
                self.save_last()
            if self._blocked:
                # The step boundary: a pending USR2 is delivered here (its handler runs before
                # the next line), then the signal is held again until the next boundary.
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})

        def _end_step(self, step) -> bool:
            """Once per optimizer step, on every rank: fold the step's examples into the
            digest and agree on stopping (True: stop after this step). One collective under
            DDP: a Ctrl-C reaches the ranks at different moments, and they must all stop
            after the same step."""
            part = self._pending if self._pending is not None else torch.zeros((), dtype=torch.int64, device=self.device)
            both = torch.stack([part, torch.tensor(int(self._stop_asked), device=part.device)])
            if plan.world > 1:
                torch.distributed.all_reduce(both)
            if self._digest is None:
                self._digest = torch.tensor(self.data_digest, dtype=torch.int64, device=part.device)
            self._digest = self._digest + both[0]
            self._pending = None
            if plan.world == 1:
                return self._stop_asked
            # Reading the agreed flag waits for the device: only at the steps that log (and
            # sync) anyway, the same steps on every rank.
            return (step % cfg.log_every == 0 or step >= plan.steps) and bool(both[1])

        def _log_train(self, step):
            if self._sums is None:
                return
            if plan.world > 1:
                torch.distributed.all_reduce(self._sums)   # every rank logs at the same steps
            ld, nd, lc, nc, lt, nt = self._sums.tolist()  # one host sync per logged step
            self._sums = None
            now = time.monotonic()
            dt = max(now - self._t_last, 1e-9)
            toks = (step - self._step_last) * plan.tokens_per_step
            tps = toks / dt
            mfu = (step - self._step_last) * plan.flops_per_step / dt / self._peak if self._peak else float("nan")
            self._t_last, self._step_last = now, step
            loss = lt / max(nt, 1)
            if not math.isfinite(loss):
                self.diverged = True
            self.rows.append({
                "split": "train", "step": step, "tokens": step * plan.tokens_per_step,
                "flops": step * plan.flops_per_step, "lr": self.lr_schedulers().get_last_lr()[0],
                "train_loss": loss, "train_loss_denoise": ld / nd if nd else None,
                "train_loss_clm": lc / nc if nc else None, "tokens_per_s": tps, "mfu": mfu,
                "wall_s": self.elapsed_before + now - self._t_start,
            })
            self.last_loss = loss

        @torch.no_grad()
        def _validate(self, step):
            if self._val is None:
                from scaling.data import TokenShards

                shards = TokenShards.open(shards_dir, "val")
                self._val = (MixedObjective(shards.tokens, shards.doc_starts, obj_cfg, VAL_SEED), shards.bytes_per_token)
            obj, bytes_per_token = self._val
            was_training = self.model.training
            self.model.eval()
            # The same cfg.val_examples examples per task for every run of a sweep, whatever
            # its batch size or world size; rank r scores chunks r, r + W, ... and the sums are
            # reduced once. Per-example losses give the standard error of the score.
            # Points before the last (Approach 1's curves) score a fixed quarter of the set,
            # so validation stays a small share of a short run.
            n = cfg.val_examples if step == plan.steps else max(1, cfg.val_examples // 4)
            chunk = max(plan.micro_batch, VAL_CHUNK)
            sums = torch.zeros(2, 4, dtype=torch.float64, device=self.device)  # per task: loss, tokens, sum and sum of squares of example means
            for t, task in enumerate(("denoise", "clm")):
                for start in range(self.global_rank * chunk, n, chunk * plan.world):
                    b = obj.batch(np.arange(start, min(n, start + chunk)), force=task)
                    b = {k: torch.from_numpy(v).to(self.device) for k, v in b.items()}
                    with self.trainer.precision_plugin.forward_context():
                        losses = self.model.token_losses(b["enc"], b["dec"], b["labels"]).double()
                    tok = (b["labels"] != IGNORE_INDEX).sum(1).double()
                    per_ex = losses.sum(1) / tok.clamp(min=1)
                    sums[t] += torch.stack([losses.sum(), tok.sum(), per_ex.sum(), (per_ex * per_ex).sum()])
            if plan.world > 1:
                sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            s = sums.tolist()
            out = {task: (s[t][0] / max(s[t][1], 1), s[t][1] / n) for t, task in enumerate(("denoise", "clm"))}
            # Standard error of the mean example loss: the noise of this score.
            se = {task: math.sqrt(max(s[t][3] / n - (s[t][2] / n) ** 2, 0.0) / max(n - 1, 1))
                  for t, task in enumerate(("denoise", "clm"))}
            # The mixed loss is what training minimises: the token-weighted mixture.
            r = cfg.clm_ratio
            wd, wc = (1 - r) * out["denoise"][1], r * out["clm"][1]
            mixed = (wd * out["denoise"][0] + wc * out["clm"][0]) / max(wd + wc, 1e-12)
            to_bpb = 1 / (math.log(2) * bytes_per_token)
            row = {
                "split": "val", "step": step, "tokens": step * plan.tokens_per_step,
                "flops": step * plan.flops_per_step,
                "val_loss": mixed, "val_loss_denoise": out["denoise"][0], "val_loss_clm": out["clm"][0],
                "val_bpb": mixed * to_bpb, "val_bpb_denoise": out["denoise"][0] * to_bpb,
                "val_bpb_clm": out["clm"][0] * to_bpb,
                "val_se": math.hypot(wd * se["denoise"], wc * se["clm"]) / max(wd + wc, 1e-12),
            }
            self.rows.append(row)
            if not all(math.isfinite(row[k]) for k in ("val_loss", "val_loss_denoise", "val_loss_clm")):
                self.diverged = True
            if step == plan.steps:
                self.final_val = row
            if was_training:
                self.model.train()

        # -- checkpoints carry the data position, the metrics so far and elapsed time
        def on_save_checkpoint(self, checkpoint):
            checkpoint["scaling"] = {
                "rows": self.rows, "step": self.global_step, "data_digest": self.digest(),
                "elapsed": self.elapsed_before + time.monotonic() - getattr(self, "_t_start", time.monotonic()),
            }

        def on_load_checkpoint(self, checkpoint):
            state = checkpoint.get("scaling", {})
            self.rows = [r for r in state.get("rows", []) if r["step"] <= checkpoint["global_step"]]
            self.start_step = checkpoint["global_step"]
            self.elapsed_before = state.get("elapsed", 0.0)
            self.data_digest, self._digest = state.get("data_digest", 0), None
            stream.start_step = self.start_step
            # A checkpoint taken after the last step's validation (a USR2 at the very end):
            # its final score is in the rows; without it the resumed run, which has no step
            # left to validate at, would end "stopped at step N of N" on every rerun.
            self.final_val = next((r for r in self.rows if r["split"] == "val" and r["step"] == plan.steps), None)

        def digest(self) -> int:
            return int(self._digest) if self._digest is not None else self.data_digest

        def save_last(self):
            """Write checkpoints/last.ckpt atomically. Safe between steps and from a signal
            handler (USR2 is held back during a step)."""
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt_path.with_name(f".{ckpt_path.name}.{os.getpid()}.tmp")
            trainer = self.trainer
            if trainer.world_size > 1:
                # trainer.save_checkpoint has a barrier: from a signal handler under DDP it
                # deadlocks. Rank 0 writes the state directly.
                if trainer.global_rank == 0:
                    state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
                    trainer.strategy.checkpoint_io.save_checkpoint(state, tmp)
                    os.replace(tmp, ckpt_path)
            else:
                trainer.save_checkpoint(tmp, weights_only=False)
                os.replace(tmp, ckpt_path)
            self._t_ckpt = time.monotonic()

    stream = BatchStream(shards_dir, obj_cfg, cfg.seed, plan)
    module = LitEncoderDecoder()
    return module, stream


# ------------------------------------------------------------- progress bar
def _progress_callback(plan: RunPlan, enabled: bool):
    import lightning as L
    from tqdm.auto import tqdm

    class Progress(L.Callback):
        bar = None

        def on_train_start(self, trainer, module):
            if not enabled or trainer.global_rank != 0:
                return
            self.bar = tqdm(
                total=plan.steps * plan.tokens_per_step, initial=trainer.global_step * plan.tokens_per_step,
                unit="tok", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, desc="train",
            )

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.bar is not None:
                self.bar.update(plan.tokens_per_step)
                if module.rows and module.rows[-1]["split"] == "train" and module.rows[-1]["step"] == trainer.global_step:
                    r = module.rows[-1]
                    self.bar.set_postfix(loss=f"{r['train_loss']:.3f}", mfu=f"{r['mfu']:.0%}", refresh=False)

        def on_train_end(self, trainer, module):
            if self.bar is not None:
                self.bar.close()

    return Progress()


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
        from scaling.distributed import Process

        self.process = Process(0, 1, 0, 0, "single")   # set by fit()

    def _check_existing(self) -> dict | None:
        rec = read_run_json(self.run_dir)
        if rec is None:
            if self.run_dir.exists() and any(p.name != CKPT_DIR for p in self.run_dir.iterdir() if not p.name.startswith(".")):
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

    def fit(self) -> dict:
        with checkpoint_signal_held():
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.cfg
        rec = self._check_existing()
        if rec is not None and rec["status"] == "completed":
            return rec
        if rec is not None and rec["status"] in ("diverged", "pruned"):
            return rec
        cfg.check()         # before anything is trained (a finished run keeps its record)
        from scaling import distributed

        proc = distributed.current()
        world = cfg.devices * cfg.num_nodes
        distributed.check_world(proc, world)
        self.process = proc
        shards_dir = resolve_data(cfg.data)
        from scaling.data import TokenShards

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
        resume_from = last_checkpoint(self.run_dir)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {
            "name": self.run_dir.name,
            "status": "running",
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
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_record(record)   # rank 0 only: the run has one record, whatever its world
        try:
            self._train(plan, shards_dir, obj_cfg, ckpt_path, resume_from, record)
        except KeyboardInterrupt:
            record["error"] = "interrupted"
            self._write_record(record)
            raise
        except BaseException as e:
            if isinstance(e, SystemExit) and e.code in (0, None):
                raise
            if isinstance(e, SystemExit) and self.checkpointed_for_requeue:
                # submitit's USR2 path: checkpoint() saved the position, the job was requeued,
                # then sys.exit(-1). Not a failure: a plain relaunch (or the requeued job) resumes.
                record["status"] = "preempted"
                step = getattr(self.trainer, "global_step", None)
                record["error"] = f"preempted at step {step}: checkpointed and requeued; a relaunch resumes"
                self._write_record(record)
                raise
            record["status"] = "failed"
            record["error"] = _first_line(e)
            record["traceback"] = traceback.format_exc(limit=20)
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._write_record(record)
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
        if accel == "cpu":
            from scaling.threads import threads_for

            torch.set_num_threads(threads_for(plan.flops_per_step / (plan.world * plan.accum)))
        record["threads"] = torch.get_num_threads()
        torch.manual_seed(cfg.seed)
        module, stream = build_lit_module(cfg, plan, str(shards_dir), obj_cfg, ckpt_path)
        self.module = module
        module.on_validation = self.on_validation
        from scaling.distributed import lightning_environment

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
            callbacks=[_progress_callback(plan, cfg.progress)],
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
        record["wall_time_s"] = module.elapsed_before + time.monotonic() - t0
        record["device"] = module.device_name
        record["precision"] = precision
        record["last_train_loss"] = getattr(module, "last_loss", None)
        record["data_digest"] = f"{module.digest() & (2**64 - 1):016x}"
        if module.final_val is not None:
            v = module.final_val
            record["val"] = {
                "mixed": {"loss": v["val_loss"], "bpb": v["val_bpb"], "se": v["val_se"]},
                "denoise": {"loss": v["val_loss_denoise"], "bpb": v["val_bpb_denoise"]},
                "clm": {"loss": v["val_loss_clm"], "bpb": v["val_bpb_clm"]},
            }
        if trainer.global_rank == 0:
            self._write_metrics(module.rows)
        if module.diverged:
            record["status"] = "diverged"
            record["error"] = f"loss became non-finite at step {step}"
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        elif module.pruned:
            record["status"] = "pruned"
            record["error"] = f"pruned at step {step} of {plan.steps} by its caller (a tuner's pruner)"
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        elif step >= plan.steps and module.final_val is not None:
            record["status"] = "completed"
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if ckpt_path.exists() and trainer.global_rank == 0:
                ckpt_path.unlink()  # the weights of a finished run are not needed for the fit
        else:
            # Stopped early (a signal or a clean interrupt): keep a checkpoint to resume from.
            module.save_last()
            record["error"] = f"stopped at step {step} of {plan.steps}; rerun to resume"
        if trainer.global_rank == 0:
            self._write_record(record)

    def _write_metrics(self, rows):
        import polars as pl

        schema = {
            "split": pl.Utf8, "step": pl.Int64, "tokens": pl.Int64, "flops": pl.Float64, "lr": pl.Float64,
            "train_loss": pl.Float64, "train_loss_denoise": pl.Float64, "train_loss_clm": pl.Float64,
            "tokens_per_s": pl.Float64, "mfu": pl.Float64, "wall_s": pl.Float64,
            "val_loss": pl.Float64, "val_loss_denoise": pl.Float64, "val_loss_clm": pl.Float64,
            "val_bpb": pl.Float64, "val_bpb_denoise": pl.Float64, "val_bpb_clm": pl.Float64,
            "val_se": pl.Float64,
        }
        df = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)
        write_parquet_atomic(df, self.run_dir / METRICS)

    def _write_record(self, record):
        if self.process.is_main:
            atomic_write_json(self.run_dir / RUN_JSON, record)

    def _supervise(self, world: int) -> dict:
        from scaling import distributed
        from scaling.threads import cpus_granted

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
        if self.module is not None and self.trainer is not None and self.trainer.state.fn is not None:
            self.module.save_last()
            self.checkpointed_for_requeue = True


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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

    return {
        "scaling": __version__, "torch": torch.__version__, "lightning": lightning.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
    }
