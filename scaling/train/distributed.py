"""Which process of a run this is, and how a multi-process (DDP) run gets its processes.

A run of world size W = devices x num_nodes has W processes, each one rank. They come from
one of three places, and `current()` says which:

* Slurm (`srun`, e.g. a submitit job with tasks_per_node = W): SLURM_PROCID / SLURM_NTASKS.
  The trainer uses Lightning's own SLURMEnvironment for these.
* submitit's local executor with tasks_per_node = W: SUBMITIT_LOCAL_GLOBALID / _NTASKS
  (submitit gives local tasks no rendezvous address; the port is derived from its job id).
* `launch_workers` below, for everything else (`scaling train --devices 2`, a notebook, the
  demo, `tune`): the calling process becomes a supervisor that starts W worker processes,
  forwards Ctrl-C/SIGTERM to them, stops them all if one dies, and returns their run record.

A lone process under Slurm (one task) is "single" too; what Lightning is told about each
case is trainer.lightning_environment's. Torch-free: a job (scaling/jobs/job.py) asks which
process it is before it loads the trainer.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import RUN_JSON, read_run_json
from scaling.base.threads import cpus_granted

# Variables set by launch_workers for its workers (and read back by current()).
_RANK, _WORLD, _LOCAL, _ADDR, _PORT = "SCALING_RANK", "SCALING_WORLD", "SCALING_LOCAL_RANK", "SCALING_ADDR", "SCALING_PORT"


@dataclass(frozen=True)
class Process:
    """This process's place in its run: rank of world, on node `node_rank`."""

    rank: int
    world: int
    local_rank: int
    node_rank: int
    source: str          # "slurm", "submitit-local", "workers" or "single"
    addr: str = "127.0.0.1"
    port: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Process:
    """Where this process's rank comes from. A lone process is rank 0 of 1 ("single")."""
    env = os.environ
    if _RANK in env:
        return Process(int(env[_RANK]), int(env[_WORLD]), int(env[_LOCAL]), 0, "workers",
                       env.get(_ADDR, "127.0.0.1"), int(env.get(_PORT, "0")))
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return Process(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       int(env.get("SLURM_NODEID", 0)), "slurm")
    if int(env.get("SUBMITIT_LOCAL_NTASKS", "1") or 1) > 1 and "SUBMITIT_LOCAL_GLOBALID" in env:
        # All tasks of a local job share its id (the controller's pid): a port they agree on
        # without talking, away from the ephemeral range.
        job = env.get("SUBMITIT_LOCAL_JOB_ID", "0")
        port = 20000 + zlib.crc32(job.encode()) % 10000
        return Process(int(env["SUBMITIT_LOCAL_GLOBALID"]), int(env["SUBMITIT_LOCAL_NTASKS"]),
                       int(env.get("SUBMITIT_LOCAL_LOCALID", 0)), int(env.get("SUBMITIT_LOCAL_NODEID", 0)),
                       "submitit-local", "127.0.0.1", port)
    return Process(0, 1, 0, 0, "single")


def check_world(proc: Process, world: int) -> None:
    """A run of world size `world` started by a scheduler must have exactly that many tasks."""
    if proc.source != "single" and proc.world != world:
        raise UserError(
            f"the run asks for {world} process(es) (devices x num_nodes) but {proc.source} started "
            f"{proc.world} task(s); set tasks_per_node x nodes to match"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _detach_with_parent() -> None:
    os.setpgrp()
    try:  # Linux: SIGKILL this worker when the supervisor dies (kill -9 of the run)
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch_workers(config: dict, world: int, run_dir: Path, cpus: int) -> int:
    """Run one training run as `world` local worker processes (`python -m scaling.train.worker`)
    and wait for them. Each worker gets cpus // world threads. Ctrl-C or SIGTERM here is
    passed on (the workers finish their step, checkpoint and stop together); if a worker
    dies, the others are stopped rather than left waiting on it. Returns the exit code of the
    first worker that failed, else 0."""
    port = _free_port()
    threads = max(1, cpus // world)
    run_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    for rank in range(world):
        env = {**os.environ, _RANK: str(rank), _WORLD: str(world), _LOCAL: str(rank), _ADDR: "127.0.0.1",
               _PORT: str(port), "OMP_NUM_THREADS": str(threads)}
        # Own process group: a terminal's Ctrl-C reaches the supervisor once, which passes it on
        # once (a second signal is an abrupt stop); workers die with a killed supervisor.
        procs.append(subprocess.Popen([sys.executable, "-m", "scaling.train.worker"], env=env,
                                      stdin=subprocess.PIPE, preexec_fn=_detach_with_parent))
        procs[-1].stdin.write(json.dumps(config).encode())
        procs[-1].stdin.close()

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    saved = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, forward)
    failed = 0
    try:
        while any(p.poll() is None for p in procs):
            codes = [p.poll() for p in procs]
            bad = [c for c in codes if c not in (None, 0)]
            if bad and not failed:
                failed = bad[0]
                time.sleep(5.0)  # let the others notice the lost peer and record it
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.05)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    return failed or next((c for c in codes if c != 0), 0)


def supervise(config: dict, world: int, run_dir: Path) -> dict:
    """Train a run as `world` local workers (launch_workers) and return the record they left."""
    code = launch_workers(config, world, run_dir, cpus_granted())
    rec = read_run_json(run_dir)
    if code == 130 or (rec or {}).get("error") == "interrupted":
        raise KeyboardInterrupt
    if code != 0:
        why = (rec or {}).get("error") or f"worker exited with code {code}"
        raise RuntimeError(f"{run_dir}: run of {world} processes did not finish: {why}")
    if rec is None:
        raise RuntimeError(f"{run_dir}: the workers left no {RUN_JSON}")
    return rec
