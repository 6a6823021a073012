"""How many CPU threads a run uses: what its model can use, on the cores it really gets.

Two rules, measured on 2-core machines (bench/bench_threads.py):
* Small steps lose to their own threads. Splitting a matmul of a 20K-parameter model over two
  threads costs more in hand-offs than it saves (0.67x), a 100K one gains little (1.05x at 1.2
  GFLOP a step), and a second thread only pays once a step holds a few GFLOPs (1.29x at 3.6).
* Threads must fit the cores the process gets: its CPU affinity, the CPUs a scheduler granted
  (SLURM_CPUS_PER_TASK) and an explicit OMP_NUM_THREADS, whichever is smallest. Idle threads
  wait passively (OMP_WAIT_POLICY=PASSIVE, set before torch loads in scaling/__init__.py), so
  they do not spin on cores that other work holds.
"""

from __future__ import annotations

import os

# A thread pays for itself when each step gives it at least this much work (FLOPs, forward +
# backward); below it, one thread. See the module docstring and bench/bench_threads.py.
FLOPS_PER_THREAD = 1.5e9


def cpu_affinity() -> int:
    """Cores the operating system lets this process run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_processes(cap: int = 8) -> int:
    """Processes for a pool (tokenizing, reading the corpus): one per core this process may
    run on, at most `cap` (8: beyond that the parent's writing of the results dominates)."""
    return max(1, min(cpu_affinity(), cap))


def cpus_granted() -> int:
    """Cores this process may use: affinity, capped by the scheduler's grant and OMP_NUM_THREADS."""
    n = cpu_affinity()
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) > 0:
            n = min(n, int(v))
    return max(1, n)


def threads_for(flops_per_step: float, cpus: int | None = None, accelerator: str = "cpu",
                default: int | None = None) -> int:
    """Threads for a run whose step costs flops_per_step FLOPs (per process, per micro-batch),
    on `cpus` cores (default: the cores granted to this process). The one place a run's thread
    count is decided: the trainer calls it, a job or a DDP worker only grants cores (Slurm's
    SLURM_CPUS_PER_TASK, OMP_NUM_THREADS). On a GPU the CPU only feeds it: torch's own
    `default` (its physical cores), capped at the cores granted."""
    cpus = cpus_granted() if cpus is None else cpus
    if accelerator != "cpu":
        return min(cpus, default or cpus)
    return max(1, min(cpus, int(flops_per_step // FLOPS_PER_THREAD)))
