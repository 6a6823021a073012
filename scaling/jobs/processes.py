"""The processes of local jobs and of the launcher that waits for them: found, stopped at a
step boundary (checkpointed, resumable), and waited for.

A local job is a tree: `sh -c "export ... && python -m submitit.local._local FOLDER"` (its pid
is the job id the ledger keeps), the submitit controller under it, and one training task per
process (`python -m submitit.core._submit FOLDER`). A task stops cleanly on one SIGTERM: its
trainer finishes the step, saves checkpoints/last.ckpt and records the run as stopped
(scaling/train/callbacks/checkpointing.py); a second signal is abrupt. So a stop signals each
task once, directly: the controller forwards SIGTERM to its tasks too, and a task signalled
through both would take two.

Ctrl-C in a terminal signals every process of the foreground group: the launcher, the
controllers and the tasks. The launcher starts its jobs with SIGINT ignored (`sigint_ignored`;
ignored signals stay ignored across exec, and the trainer leaves an ignored SIGINT alone), so
the launcher alone takes Ctrl-C and stops its runs itself, each once. Linux (/proc) only, as the
local executor's `local_alive` (states.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from scaling.jobs.ledger import Job

TASK = b"submitit.core._submit"
STOP_WAIT_S = 120.0   # for stopped runs to reach a step boundary and write their checkpoint


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def started_at(pid: int) -> int | None:
    """A process's start time (clock ticks after boot): with the pid, it names one process,
    never a later one that reused the pid."""
    st = _stat(pid)
    return st[1] if st else None


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:   # no /proc (not Linux): nothing found, as for local_alive
        return []
    for name in names:
        if name.isdigit() and (st := _stat(int(name))) is not None:
            children.setdefault(st[0], []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _job_pid(job: Job) -> int | None:
    """The local job's root process, if it is still the one we started (its command names
    submitit and the job's launch folder)."""
    try:
        pid = int(job.job_id)
    except ValueError:
        return None
    cmd = _cmdline(pid)
    return pid if b"submitit" in cmd and job.launch.encode() in cmd else None


def job_tree(job: Job) -> list[int]:
    pid = _job_pid(job)
    return [] if pid is None else [pid, *descendants(pid)]


def _signal(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def stop(job: Job) -> list[int]:
    """Ask a local job to stop: one SIGTERM to each training task (it checkpoints at its step
    boundary and ends; its controller and shell then end too). A job whose tasks have not
    started yet has trained nothing: its tree is killed. Returns the job's processes, all of
    which to wait for."""
    tree = job_tree(job)
    found = [p for p in tree if TASK in _cmdline(p)]
    if found:
        _signal(found, signal.SIGTERM)
    else:
        _signal(tree, signal.SIGKILL)
    return tree


def kill(job: Job) -> None:
    """The abrupt end (a second Ctrl-C, a stop that took too long): the last whole checkpoint
    stays, as after any kill -9."""
    _signal(job_tree(job), signal.SIGKILL)


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if _stat(p) is not None and not _zombie(p)]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def wait_gone(pids: list[int], timeout_s: float, poll_s: float = 0.1) -> list[int]:
    """Wait until none of `pids` runs, at most timeout_s; returns those still running."""
    deadline = time.monotonic() + timeout_s
    left = alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(poll_s)
        left = alive(left)
    return left


def launcher_alive(entry: dict) -> int | None:
    """The pid of a launch's launcher (a ledger `launches` entry) while it still runs."""
    pid, t0 = entry.get("pid"), entry.get("pid_started")
    if not isinstance(pid, int) or pid == os.getpid():
        return None
    return pid if t0 is not None and started_at(pid) == t0 else None


@contextlib.contextmanager
def sigint_ignored():
    """Processes started inside the block ignore SIGINT, and so do theirs: the terminal's
    Ctrl-C reaches the launcher only (see the module's docstring). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
