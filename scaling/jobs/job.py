"""What one job runs: a submitit Checkpointable around one TrainingRun, and the job's record.

`TrainJob` is a sweep's run; a tune trial (tuning/jobs.py `TrialJob`) is a TrainJob that asks
its study for its values first. On preemption or at the time limit submitit sends USR2 and
calls `checkpoint()`: we save the run's last checkpoint (with its exact data position) and hand
submitit a FRESH job with the same config to requeue; the requeued job's `fit()` resumes from
checkpoints/last.ckpt. Submitit is the only owner of requeueing (the trainer gives Lightning
`SLURMEnvironment(auto_requeue=False)` under Slurm). The job also keeps a small record of its
own next to the run (`<sweep>/jobs/<run>.json`: job id, host, how many times it was started
and checkpointed, its step every few seconds), so `scaling sweep status` can say how often a
run was requeued on any executor; the run directory stays the trainer's alone. This module
imports neither torch nor the trainer: `training_run()` below is the one seam where they enter.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import submitit
from submitit.slurm import slurm as slurm_env

from scaling.base.config import TrainConfig
from scaling.base.rundir import atomic_write_json
from scaling.base.signals import checkpoint_signal_held
from scaling.train.distributed import current



def job_identity() -> dict:
    """Who is running: scheduler job id (array task included), restart count, host."""
    try:
        job_id = submitit.JobEnvironment().job_id
    except RuntimeError:  # in-process (debug executor, or called directly)
        job_id = None
    restarts = os.environ.get("SLURM_RESTART_COUNT")
    return {
        "job_id": job_id,
        "executor": os.environ.get("SUBMITIT_EXECUTOR", "debug"),
        "slurm_restart_count": int(restarts) if restarts else 0,
        "host": socket.gethostname(),
    }


def record_start(path: Path) -> dict:
    """Count this start in the job record: starts after the first one of a job are requeues."""
    import json

    path = Path(path)
    ident = job_identity()
    try:
        prev = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        prev = {}
    same_job = prev.get("job_id") == ident["job_id"] and ident["job_id"] is not None
    starts = prev.get("starts", 0) + 1 if same_job else 1
    # requeues: of this job; requeues_before: of the run's earlier jobs (a relaunch is a new
    # job, and its start a resumption, not a requeue). `status` shows their sum.
    before = int(prev.get("requeues_before") or 0) + (0 if same_job else int(prev.get("requeues") or 0))
    rec = {**ident, "starts": starts, "requeues": max(starts - 1, ident["slurm_restart_count"]),
           "requeues_before": before,
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "checkpointed": prev.get("checkpointed", 0) if same_job else 0,
           "checkpoint_steps": prev.get("checkpoint_steps", []) if same_job else []}
    atomic_write_json(path, rec)
    return rec


def update_record(path: Path, **fields) -> None:
    import json

    try:
        rec = json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return
    for k, v in fields.items():
        rec[k] = v(rec.get(k)) if callable(v) else v
    atomic_write_json(Path(path), rec)


@contextlib.contextmanager
def once_per_process():
    """Let submitit's USR2 handler run once in this process. A second USR2 can arrive while
    the first is handled (Slurm delivered one `scancel --signal=USR2 JOB.STEP` twice, 23 ms
    apart); Python then runs the handler again inside checkpoint(), which took the record
    lock the outer call holds: the job hung, RUNNING, until its time limit. One checkpoint
    and one requeue per process; the requeued process handles its own signals again. The
    caller's handler is given back afterwards (in-process runs)."""
    import signal
    import sys

    first = signal.getsignal(signal.SIGUSR2) if threading.current_thread() is threading.main_thread() else None
    if not callable(first):  # not under submitit (default action), or not the main thread
        yield
        return
    seen = []

    def handler(signum, frame):
        if seen:
            print("USR2 again while checkpointing: ignored (one checkpoint, one requeue)", file=sys.stderr, flush=True)
            return
        seen.append(signum)
        first(signum, frame)

    signal.signal(signal.SIGUSR2, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR2, first)


REQUEUE_PATIENCE_S = 60.0   # within submitit's 90 s between the signal and the kill


def _requeue_patiently(env, countdown: int) -> None:
    """submitit's requeue (`scontrol requeue JOB`), retried for up to a minute. Slurm can
    refuse a request on an array task for a moment ("Job can not be altered now, try again
    later", as scancel meets while the array's other tasks wait); submitit's own call gives
    up at the first refusal, and the job then dies with exit 1 although its checkpoint is
    saved: a preempted trial or run is marked failed instead of resuming. Seen in the Slurm
    tests: the tune study's preempted trial died so in 1 of 2 runs of the whole file."""
    import subprocess
    import sys

    from submitit.core import logger

    jid = env.job_id
    deadline = time.monotonic() + REQUEUE_PATIENCE_S
    while True:
        r = subprocess.run(["scontrol", "requeue", jid], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            break
        why = (r.stderr or r.stdout).strip() or f"exit {r.returncode}"
        if time.monotonic() > deadline:
            raise RuntimeError(f"scontrol requeue {jid} refused for {REQUEUE_PATIENCE_S:.0f} s: {why}")
        print(f"scontrol requeue {jid}: {why}; retrying", file=sys.stderr, flush=True)
        time.sleep(2)
    logger.get_logger().info(f"Requeued job {jid} ({countdown} remaining timeouts)")


# Set where the job unpickles TrainJob (this module), so in every process that runs our jobs.
slurm_env.SlurmJobEnvironment._requeue = _requeue_patiently


def report_every_s() -> float:
    return float(os.environ.get("SCALING_JOB_REPORT_S", "10"))


def training_run(cfg, on_validation=None):
    """A TrainingRun of `cfg` (scaling.train.run), imported when a job starts training.

    THE SEAM where torch and Lightning enter a job: this is the one place TrainJob and
    TrialJob (tuning/jobs.py) reach the trainer, so submitting, planning and `status` stay
    torch-free (tests/test_startup.py) and a job pays for torch only once it trains."""
    from scaling.train.run import TrainingRun

    return TrainingRun(cfg, on_validation)


def is_main_process() -> bool:
    """Rank 0 of a DDP job, or a job of one process (torch-free: scaling.train.distributed
    reads the environment the launcher set)."""
    return current().is_main


def _count_checkpoint(record: Path, step: int | None) -> None:
    """One more checkpoint in the job record, and the step it was taken at."""
    update_record(record, checkpointed=lambda n: (n or 0) + 1,
                  checkpoint_steps=lambda steps: (steps or []) + [step])


class TrainJob(submitit.helpers.Checkpointable):
    """One sweep run; a TrialJob shares its lifecycle (_start_record, then _fit: the run, the
    report thread, stopped however fit() ends). Pickled: the config dict only, never a model."""

    def __init__(self, config: dict, record: str | None = None):
        self.config = dict(config)
        self.record = record  # path of this run's job record, or None
        self._run = None
        self._lock = threading.Lock()

    def __call__(self) -> dict:
        # Before torch's threads and the report thread start: they inherit the blocked USR2,
        # and only the trainer's step boundaries let it through (see scaling/base/signals.py).
        with checkpoint_signal_held(), once_per_process():
            return self._call()

    def _call(self) -> dict:
        cfg = TrainConfig.from_dict(self.config)
        # A DDP job is several tasks of one run: only rank 0 keeps the job's record (and
        # submitit calls checkpoint() on rank 0 only).
        keep_record = bool(self.record) and is_main_process()
        if keep_record:
            self._start_record()
        return self._fit(training_run(cfg), report=keep_record)

    def _start_record(self, **fields) -> None:
        """Count this start in the job record (record_start rewrites it); `fields` go in at once."""
        record_start(Path(self.record))
        if fields:
            update_record(Path(self.record), **fields)

    def _fit(self, run, report: bool = True) -> dict:
        """Train `run` (a training_run(): checkpoint() saves it when USR2 comes); with
        `report`, a thread puts its step in the job record every few seconds (_report)."""
        self._run = run
        stop = threading.Event()
        if report:
            threading.Thread(target=self._report, args=(stop,), daemon=True, name="job-report").start()
        try:
            return self._run.fit()
        finally:
            stop.set()

    def _report(self, stop: threading.Event) -> None:
        """Every few seconds, put the trainer's step and latest training loss in the job
        record: `status` shows the progress and loss of running runs, and `start_step` (where this start resumed) proves a
        requeued job picked up its checkpoint."""
        while not stop.wait(report_every_s()):
            trainer = getattr(self._run, "trainer", None)
            if trainer is None:
                continue
            recorder = getattr(self._run, "recorder", None)
            loss = getattr(recorder, "last_loss", None)   # the latest logged training loss
            with self._lock:
                update_record(Path(self.record), step=int(trainer.global_step),
                              start_step=int(self._run.start_step), updated_at=time.time(),
                              loss=float(loss) if loss is not None else None)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # Called by submitit from its USR2 handler, in the main thread, while fit() runs.
        if self._run is not None:
            self._run.save_checkpoint()
            if self.record:
                step = getattr(getattr(self._run, "trainer", None), "global_step", None)
                with self._lock:  # the report thread may be mid-write; it never waits on us
                    _count_checkpoint(Path(self.record), step)
        # A fresh instance: `self` holds the live TrainingRun, which must not be pickled.
        return submitit.helpers.DelayedSubmission(self.fresh())

    def fresh(self) -> "TrainJob":
        """The job to requeue: the same work, no live state."""
        return type(self)(self.config, self.record)

    def __getstate__(self) -> dict:
        return {"config": self.config, "record": self.record, "_run": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
