"""Submit a sweep's runs with submitit: one job array on Slurm, local processes, or in-process.

Relaunching is idempotent. Each run's state comes from its run directory and the scheduler
(see status.py): completed runs are skipped, runs with a job pending or running are not
submitted twice, failed and diverged runs only with retry_failed. Cancelled, timed-out and
interrupted runs are resubmitted and resume from their last checkpoint. Each run is a TrainJob
(jobs/job.py) submitted through jobs/executors.open_launch, the launch a tune study uses too;
`launch` decides what to submit (`--runs` a subset), `_Submission` submits it and keeps the
ledger, and `_foreground` runs local and debug jobs to their end. On Slurm, runs go by their
resources (keys by size) into one job array each, whose script `check_scripts` hands
`sbatch --test-only` before anything is written (jobs/sbatch.py: a refusal is one line).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError
from scaling.base.rundir import atomic_write_bytes, branch_checkpoint, last_checkpoint, read_run_json
from scaling.jobs import processes
from scaling.jobs import sbatch
from scaling.jobs.executors import (LAUNCHES, ExecutorSettings, check_executor, launch_stamp, make_executor,
                                    open_launch, require_sbatch, slurm_parameters)
from scaling.jobs.job import TrainJob
from scaling.jobs.ledger import Job, Ledger, RunEntry, load_ledger
from scaling.jobs.states import error_line, slurm_states
from scaling.sweep.sizes import check_stated_vocab
from scaling.sweep.spec import RunSpec, Sweep
from scaling.sweep.status import DONE, RunState, _state, sweep_states

RESUBMIT = {"not launched", "cancelled", "timeout", "preempted", "interrupted", "corrupt"}
RETRY = {"failed", "diverged"}


@dataclass
class LaunchResult:
    dir: Path
    executor: str
    submitted: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # state -> run names
    job_ids: dict[str, str] = field(default_factory=dict)
    folder: Path | None = None
    errors: dict[str, str] = field(default_factory=dict)      # local/debug runs that raised
    scripts: list[tuple[list[str], str]] = field(default_factory=list)  # Slurm: (runs, sbatch script) per job array

    def describe(self) -> str:
        skip = ", ".join(f"{len(v)} {k}" for k, v in sorted(self.skipped.items()))
        return f"{len(self.submitted)} submitted" + (f"; skipped: {skip}" if skip else "")


class LaunchInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped a foreground launch: `stopped` runs were stopped at a step
    boundary and checkpointed, `waiting` ones never started; a relaunch resumes them all."""

    def __init__(self, signum: int, stopped: list[str], waiting: list[str], killed: list[str]):
        self.signum, self.stopped, self.waiting, self.killed = signum, stopped, waiting, killed
        super().__init__(self.line())

    @property
    def exit_code(self) -> int:
        return 128 + self.signum     # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports them

    def line(self) -> str:
        what = "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name
        parts = [f"{len(self.stopped)} running run(s) stopped and checkpointed"
                 + (f" ({', '.join(self.stopped)})" if self.stopped else "")]
        if self.killed:
            parts.append(f"{len(self.killed)} killed, resuming from their last checkpoint ({', '.join(self.killed)})")
        if self.waiting:
            parts.append(f"{len(self.waiting)} not started")
        return f"interrupted ({what}): " + "; ".join(parts) + "; launch again to resume"


class _Stop(BaseException):
    """SIGTERM in the launcher, raised where it waits (a BaseException, as KeyboardInterrupt)."""


def _merge(ledger: Ledger, sweep: Sweep) -> None:
    """Put the sweep's runs into the ledger, refusing to reuse a run directory for a
    different config (a changed sweep file would otherwise resume the wrong run)."""
    for r in sweep.runs:
        cfg = r.config.to_dict()
        cfg["out"] = f"runs/{r.name}"
        entry = ledger.runs.get(r.name)
        try:
            rec = read_run_json(ledger.run_dir(r.name))
        except UserError:
            rec = None   # corrupt: `status` reports it; the trainer sets it aside and restarts
        old = (rec or {}).get("config") or (entry.config if entry else None)
        if old is not None and _identity(old) != r.config.identity():
            if rec is not None or (entry and entry.jobs):
                changed = sorted(k for k, v in r.config.identity().items() if _identity(old).get(k) != v)
                data = r.config.data
                if "data" in changed and data not in (None, "", "default") and not Path(data).exists():
                    # A mistyped path, not a new experiment: say that, not "remove the run".
                    raise UserError(f"{sweep.path}: train.data = {data!r}: no such file or directory")
                raise UserError(
                    f"{ledger.run_dir(r.name)}: holds run {r.name} with a different config than {sweep.path} "
                    f"asks for now (changed: {', '.join(changed)}); launch to a new --out, or remove that run directory")
        jobs = entry.jobs if entry else []
        ledger.runs[r.name] = RunEntry(r.name, cfg, r.n_params, r.n_params_nonembed, r.flops_per_token, r.budget, jobs)


def _identity(cfg: dict) -> dict:
    try:
        return TrainConfig.from_dict({k: v for k, v in cfg.items()}).identity()
    except (UserError, TypeError):
        return {}


def current_states(ledger: Ledger, names: list[str]) -> dict[str, RunState]:
    jobs = [ledger.runs[n].job for n in names if ledger.runs[n].job is not None]
    sched = slurm_states([j for j in jobs if j.executor == "slurm"])
    return {n: _state(ledger.dir, n, ledger.run_dir(n), ledger.runs[n], sched) for n in names}


def select(sweep: Sweep, states: dict[str, RunState], retry_failed: bool) -> tuple[list[RunSpec], dict[str, list[str]]]:
    todo, skipped = [], {}
    for r in sweep.runs:
        s = states[r.name].state
        if s in RESUBMIT or (retry_failed and s in RETRY):
            todo.append(r)
        else:
            skipped.setdefault(s, []).append(r.name)
    return todo, skipped


def chosen(sweep: Sweep, patterns: str | None) -> set[str]:
    """The runs `--runs` names: comma-separated shell patterns (`C1e18-*,N25M-*`) over run names."""
    names = [r.name for r in sweep.runs]
    if patterns is None:
        return set(names)
    picked: set[str] = set()
    for pat in (p.strip() for p in patterns.split(",")):
        hits = fnmatch.filter(names, pat) if pat else []
        if not hits:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise UserError(f"--runs {pat!r}: matches no run of {sweep.path} (its runs: {shown})")
        picked.update(hits)
    return picked


def launch(sweep: Sweep, executor: str | None = None, out: Path | None = None, dry_run: bool = False,
           retry_failed: bool = False, wait: bool = False, progress: bool = True, poll_s: float = 2.0,
           runs: str | None = None, lines: bool = False) -> LaunchResult:
    """Launch the sweep's runs that are not done. progress: a progress bar (a terminal);
    lines: instead, a line as each local run ends (a log file, a notebook, CI)."""
    kind = check_executor(executor or sweep.resources.default)
    dir = Path(out) if out is not None else sweep.out
    if dir.exists() and not dir.is_dir():
        raise UserError(f"{dir}: exists and is not a directory")
    ledger = load_ledger(dir) or Ledger(dir, sweep.name, sweep.kind)
    if ledger.sweep != sweep.name:
        raise UserError(f"{dir}: holds sweep {ledger.sweep!r}, not {sweep.name!r}; use another --out")
    _merge(ledger, sweep)
    names = [r.name for r in sweep.runs]
    states = current_states(ledger, names)
    todo, skipped = select(sweep, states, retry_failed)
    wanted = chosen(sweep, runs)
    if runs is not None:
        left = [r.name for r in todo if r.name not in wanted]
        todo = [r for r in todo if r.name in wanted]
        if left:
            skipped["not in --runs"] = left
    result = LaunchResult(dir, kind, [r.name for r in todo], skipped)
    if todo:
        preflight(sweep, kind, todo, dry_run)
        if kind == "slurm":   # every job array's script, as sbatch --test-only accepted it
            result.scripts = check_scripts(sweep, dir, todo, hold=dry_run)
    if dry_run or not todo:
        return result
    existed = dir.exists()
    toml = (dir / "sweep.toml").read_bytes() if (dir / "sweep.toml").is_file() else None
    (dir / "jobs").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dir / "sweep.toml", sweep.path.read_bytes())
    sub = _Submission(sweep, ledger, result, len(todo))
    if kind == "slurm":
        try:
            sub.array(sweep, todo, states)
        except UserError:
            if not result.job_ids:   # nothing submitted: leave nothing behind
                _undo(dir, existed, sub.launch.folder, toml)
            raise
        if wait:
            wait_for(dir, names, progress, poll_s)
        return result
    ledger.save()
    _foreground(sweep, sub, todo, progress, poll_s, lines)
    return result


def preflight(sweep: Sweep, kind: str, todo: list[RunSpec], dry_run: bool) -> None:
    """What must hold before a job is submitted, checked for --dry-run too: the executor can
    submit (sbatch for Slurm), the logger asked for is installed, each run's data is there,
    and a stated vocabulary is the data's.
    A dry run does not prepare a raw corpus or the embedded one (a real launch does, as its
    jobs would): it checks that the path exists."""
    require_sbatch(kind)
    for r in todo:   # the logger's package, where the jobs will import it (one line per kind)
        r.config.check_logger_installed(lambda key: f"{sweep.path}: train.{key} =")
    for data in sorted({r.config.data or "" for r in todo}):
        path = Path(data) if data not in ("", "default") else None
        if path is not None and not path.exists():
            raise UserError(f"{sweep.path}: train.data = {data!r}: no such file or directory")
        if sweep.vocab_size is None or (dry_run and (path is None or not (path / "meta.json").exists())):
            continue
        try:
            check_stated_vocab(data or None, sweep.vocab_size)
        except UserError as e:
            raise UserError(f"{sweep.path}: {e}") from None


def groups(sweep: Sweep, todo: list[RunSpec]) -> list[tuple[ExecutorSettings, list[RunSpec]]]:
    """The runs by what their jobs ask of Slurm: one job array each (keys by size can give
    small and large runs different resources)."""
    out: dict[str, tuple[ExecutorSettings, list[RunSpec]]] = {}
    for r in todo:
        settings = ExecutorSettings(sweep.resources_of(r), sweep.slurm_of(r))
        key = json.dumps(slurm_parameters(settings, ""), sort_keys=True, default=str)
        out.setdefault(key, (settings, []))[1].append(r)
    return list(out.values())


def check_scripts(sweep: Sweep, dir: Path, todo: list[RunSpec], hold: bool = False) -> list[tuple[list[str], str]]:
    """Each job array's sbatch script, tested with `sbatch --test-only` before anything is
    written: a refusal is one line naming the sweep file's key and Slurm's reason."""
    folder = (Path(dir) / LAUNCHES / launch_stamp("slurm")).absolute()
    job_name = f"{sweep.name}-{folder.name}"
    scripts = []
    all_runs = len(todo) == len(sweep.runs)
    for settings, runs in groups(sweep, todo):
        text = sbatch.script(settings, folder, job_name, len(runs))
        why = sbatch.test_only(text)
        if why is not None:
            option = sbatch.refused_option(why, settings, folder, job_name, len(runs))
            which = "" if all_runs and len(runs) == len(todo) else f" (runs {_few(r.name for r in runs)})"
            raise UserError(sbatch.refusal_line(str(sweep.path), why, option, set(settings.slurm.extra), which))
        scripts.append(([r.name for r in runs], sbatch.script(settings, folder, job_name, len(runs), hold) if hold else text))
    return scripts


def waiting_for(settings: ExecutorSettings, job_id: str) -> ExecutorSettings:
    """`settings` for jobs that start once Slurm job `job_id` (a trunk) has completed; a
    dependency that can never be met (the trunk failed or was cancelled) cancels them."""
    extra = {**settings.slurm.extra, "dependency": f"afterok:{job_id}", "kill_on_invalid_dep": "yes"}
    return replace(settings, slurm=replace(settings.slurm, extra=extra))


def _few(names, most: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


class _Submission:
    """One launch of a sweep: its folder and executor (jobs/executors.open_launch), each run's
    TrainJob, and the ledger's entry of every job submitted."""

    def __init__(self, sweep: Sweep, ledger: Ledger, result: LaunchResult, runs: int):
        self.ledger, self.result, self.kind = ledger, result, result.executor
        self.launch = open_launch(self.kind, ledger.dir, sweep, sweep.name)
        result.folder = self.launch.folder
        # The launcher's pid (with its start time, against pid reuse): `sweep cancel` stops a
        # foreground launch (local, debug) before it starts the runs still waiting.
        ledger.launches.append({"id": self.launch.folder.name, "executor": self.kind, "runs": runs, "at": time.time(),
                                "pid": os.getpid(), "pid_started": processes.started_at(os.getpid())})

    def job(self, r: RunSpec):
        """The run's TrainJob: its config with an absolute out (jobs may start in another
        cwd), no progress bars in job logs, and its job record."""
        c = r.config.to_dict()
        c["out"] = str(self.ledger.run_dir(r.name).resolve())
        c["progress"] = False
        if r.trunk:   # a branch starts from its trunk's checkpoint (sweep/branches.py)
            c["branch_from"] = str(self.ledger.run_dir(r.trunk).resolve())
        return TrainJob(c, str(self.ledger.job_record(r.name).resolve()))

    def record(self, r: RunSpec, job_id: str, name: str | None = None) -> None:
        lch = self.launch
        self.ledger.runs[r.name].jobs.append(Job(self.kind, job_id, lch.folder.name, name or lch.job_name, time.time()))
        self.result.job_ids[r.name] = job_id

    def array(self, sweep: Sweep, todo: list[RunSpec], states: dict[str, RunState]) -> None:
        """Slurm: one job array for each set of resources, submitted held; each task is named
        `<sweep>/<run>` (squeue, sacct, %x), then the array is let go. A branch whose trunk is
        queued or training waits for the trunk's job (`afterok`: Slurm cannot wait for a step,
        so it starts once the trunk has completed) in an array per trunk, submitted after it."""
        waits = {r.name: self._trunk_job(r, states) for r in todo if r.trunk}
        self._arrays(sweep, [r for r in todo if waits.get(r.name) is None])
        for job_id in dict.fromkeys(j for j in waits.values() if j is not None):
            self._arrays(sweep, [r for r in todo if waits.get(r.name) == job_id], after=job_id)

    def _trunk_job(self, r: RunSpec, states: dict[str, RunState]) -> str | None:
        """The Slurm job a branch must wait for: its trunk's, where the trunk is submitted now or
        queued or training and has not yet written the branch's checkpoint."""
        if branch_checkpoint(self.ledger.run_dir(r.trunk), r.branch_step).exists():
            return None
        if r.trunk in self.result.job_ids:
            return self.result.job_ids[r.trunk]
        trunk = states.get(r.trunk)
        return trunk.job_id if trunk is not None and trunk.state in ("pending", "running") else None

    def _arrays(self, sweep: Sweep, todo: list[RunSpec], after: str | None = None) -> None:
        for settings, runs in groups(sweep, todo):
            if after is not None:
                settings = waiting_for(settings, after)
            ex = make_executor("slurm", self.launch.folder, settings, self.launch.job_name, hold=True)
            try:
                with ex.batch():
                    jobs = [ex.submit(self.job(r)) for r in runs]
            except Exception as e:   # sbatch refused what --test-only took (the cluster changed)
                if self.result.job_ids:   # the arrays already submitted stay in the ledger
                    self.ledger.save()
                raise UserError(f"{sweep.path}: sbatch refused the job array of {_few(r.name for r in runs)}: "
                                f"{_sbatch_reason(e)}" + (f"; {len(self.result.job_ids)} run(s) submitted before it"
                                                          if self.result.job_ids else "")) from None
            try:
                named = sbatch.name_tasks({str(j.job_id): sbatch.task_name(sweep.name, r.name) for r, j in zip(runs, jobs)})
                for r, j in zip(runs, jobs):
                    self.record(r, str(j.job_id), named.get(str(j.job_id)))
                self.ledger.save()
            finally:
                sbatch.release(str(jobs[0].job_id).split("_")[0])

    def submit(self, r: RunSpec):
        with processes.sigint_ignored():   # Ctrl-C reaches the launcher only, which stops the job
            job = self.launch.executor.submit(self.job(r))
        self.record(r, str(job.job_id) if self.kind == "local" else "-")
        self.ledger.save()
        return job


def _foreground(sweep: Sweep, sub: _Submission, todo: list[RunSpec], progress: bool, poll_s: float,
                lines: bool = False) -> None:
    """Local and debug run in the foreground, `parallelism` at a time (the local executor
    itself would start every job at once); debug ones in-process, one by one. Ctrl-C or
    SIGTERM stops the runs started (each checkpointed at a step boundary) and raises
    LaunchInterrupted; nothing more is started."""
    kind, result = sub.kind, sub.result
    n = 1 if kind == "debug" else sweep.resources.concurrent()
    desc = f"{sweep.name} ({kind}, {n} at a time)"
    bar = _bar(len(todo), progress, desc)
    ended = 0
    if lines:
        print(f"{desc}: {len(todo)} run(s) to train", file=sys.stderr, flush=True)

    def tick(r: RunSpec) -> None:
        nonlocal ended
        ended += 1
        bar.update(1)
        if lines:
            print(f"{desc}: {r.name} {_ended_as(sub.ledger, r, result)} ({ended}/{len(todo)})",
                  file=sys.stderr, flush=True)

    running: list[tuple[RunSpec, object]] = []
    queue = list(todo)
    try:
        with _signals_raise(signal.SIGTERM):
            while queue or running:
                while len(running) < n and (r := _next_ready(sub.ledger, queue)) is not None:
                    queue.remove(r)
                    running.append((r, sub.submit(r)))
                if not running and queue:   # branches whose trunk ended without their checkpoint
                    for r in queue:
                        result.errors[r.name] = _blocked(sub.ledger, r)
                        tick(r)
                    queue = []
                    continue
                if kind == "debug":
                    r, job = running.pop(0)
                    _finish(r, job, result)
                    tick(r)
                    if _stopped_early(sub, r):   # the run took Ctrl-C itself (in-process)
                        raise LaunchInterrupted(signal.SIGINT, [r.name], [q.name for q in queue], [])
                    continue
                time.sleep(poll_s)
                for r, job in list(running):
                    if job.done():
                        running.remove((r, job))
                        _finish(r, job, result)
                        tick(r)
    except (KeyboardInterrupt, _Stop) as e:
        bar.close()
        signum = signal.SIGINT if isinstance(e, KeyboardInterrupt) else signal.SIGTERM
        stopped, killed = _stop_running(sub, [(r, j) for r, j in running if not j.done()])
        raise LaunchInterrupted(signum, stopped, [q.name for q in queue], killed) from None
    finally:
        bar.close()


def _ended_as(ledger: Ledger, r: RunSpec, result: LaunchResult) -> str:
    """How a run's job ended, in a word or a line: its record's status and final loss, or its error."""
    err = result.errors.get(r.name)
    if err:
        return err if err.startswith("not started") else f"failed: {err}"
    rec = None
    with contextlib.suppress(UserError):
        rec = read_run_json(ledger.run_dir(r.name))
    loss = (((rec or {}).get("val") or {}).get("mixed") or {}).get("loss")
    return f"{(rec or {}).get('status', 'ended')}" + (f", loss {loss:.4f}" if loss is not None else "")


def _next_ready(ledger: Ledger, queue: list[RunSpec]) -> RunSpec | None:
    """The first run of the queue that can start: any but a branch, and a branch once its
    trunk's checkpoint at its branch step is written (while the trunk trains on) or once it has
    a checkpoint of its own (a resumed branch)."""
    for r in queue:
        if not r.trunk or branch_checkpoint(ledger.run_dir(r.trunk), r.branch_step).exists() \
                or last_checkpoint(ledger.run_dir(r.name)) is not None:
            return r
    return None


def _blocked(ledger: Ledger, r: RunSpec) -> str:
    rec = None
    with contextlib.suppress(UserError):
        rec = read_run_json(ledger.run_dir(r.trunk))
    status = (rec or {}).get("status", "not launched")
    return (f"not started: its trunk {r.trunk} ended {status} without its checkpoint at step {r.branch_step}; "
            f"launch again once the trunk can run")


def _sbatch_reason(e: Exception) -> str:
    text = str(e)
    lines = [ln for ln in text.splitlines() if "sbatch: error" in ln]
    return sbatch.reason("\n".join(lines)) if lines else error_line(e)


def _undo(dir: Path, existed: bool, folder: Path, toml: bytes | None) -> None:
    """A launch that submitted nothing leaves the sweep directory as it found it."""
    import shutil

    if not existed:
        shutil.rmtree(dir, ignore_errors=True)
        return
    shutil.rmtree(folder, ignore_errors=True)
    if toml is None:
        (dir / "sweep.toml").unlink(missing_ok=True)
    else:
        atomic_write_bytes(dir / "sweep.toml", toml)
    with contextlib.suppress(OSError):
        (dir / "jobs").rmdir()   # only if empty: it was made for this launch


def _stopped_early(sub: _Submission, r: RunSpec) -> bool:
    try:
        rec = read_run_json(sub.ledger.run_dir(r.name))
    except UserError:
        return False
    return rec is not None and rec.get("status") == "running"


@contextlib.contextmanager
def _signals_raise(*sigs: int):
    """While the launcher waits, these signals raise _Stop (SIGINT keeps its KeyboardInterrupt
    unless named); main thread only; the old handlers are back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_stop(signum, frame):
        raise _Stop()
    old = {sig: signal.signal(sig, raise_stop) for sig in sigs}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _stop_running(sub: _Submission, running: list[tuple[RunSpec, object]]) -> tuple[list[str], list[str]]:
    """Stop the local jobs started: one SIGTERM to each training process (it finishes its
    step, checkpoints, records the run as stopped) and wait for them. A second Ctrl-C or
    SIGTERM, or processes.STOP_WAIT_S without an end, kills what is left (the last checkpoint stays).
    Returns (stopped, killed) run names."""
    jobs = {r.name: sub.ledger.runs[r.name].job for r, _ in running}
    jobs = {name: j for name, j in jobs.items() if j is not None and j.executor == "local"}
    if not jobs:
        return [], []
    pids = {name: processes.stop(j) for name, j in jobs.items()}
    if sys.stderr.isatty():   # someone waits at a terminal: say why it takes a moment
        print(f"stopping {len(jobs)} run(s) at their next step (checkpointing); Ctrl-C again to kill",
              file=sys.stderr, flush=True)
    every = [p for ps in pids.values() for p in ps]
    try:
        with _signals_raise(signal.SIGINT, signal.SIGTERM):   # a second one: kill now
            left = processes.wait_gone(every, processes.STOP_WAIT_S)
    except _Stop:
        left = processes.alive(every)
    killed = [name for name in jobs if set(pids[name]) & set(left)]
    for name in killed:
        processes.kill(jobs[name])
    return [name for name in jobs if name not in killed], killed


def _finish(r: RunSpec, job, result: LaunchResult) -> None:
    if result.executor == "debug":
        # exception(), not result(): the debug job's result() opens pdb post-mortem, which
        # would hang a non-interactive launch. breakpoint() in the code still works.
        e = job.exception()
        if e is not None:
            import traceback

            traceback.print_exception(e, file=sys.stderr)
            result.errors[r.name] = f"{type(e).__name__}: {e}".splitlines()[0]
        return
    try:
        job.results()   # every task of a multi-process (DDP) job; one for the rest
    except Exception as e:  # the run's own record says failed; report and go on
        result.errors[r.name] = error_line(e)


def _bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=not enabled, file=sys.stderr)


def wait_for(dir: Path, names: list[str] | None = None, progress: bool = True, poll_s: float = 5.0,
             timeout_s: float | None = None) -> list[RunState]:
    """Block until no run of the sweep is pending or running; returns the final states."""
    start = time.time()
    bar = None
    try:
        while True:
            states = [s for s in sweep_states(dir) if names is None or s.name in names]
            done = sum(s.state in DONE for s in states)
            if bar is None:
                bar = _bar(len(states), progress, f"{Path(dir).name}")
            bar.n = done
            bar.refresh()
            if done == len(states):
                return states
            if timeout_s is not None and time.time() - start > timeout_s:
                raise TimeoutError(f"{dir}: runs still pending or running after {timeout_s:.0f}s")
            time.sleep(poll_s)
    finally:
        if bar is not None:
            bar.close()
