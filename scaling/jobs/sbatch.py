"""What sbatch is handed and what it answers: the script, `sbatch --test-only`, a refusal as
one line naming the sweep-file key, and each array task's own job name.

A launch checks every script it will submit with `sbatch --test-only` before it writes
anything (a dry run too, and prints the scripts), so a bad partition, account, qos,
constraint, time or memory is one line, `<file>: slurm.partition = 'gpu': sbatch refused it:
invalid partition specified: gpu`, and no half-made sweep directory. Slurm's reason does not
always say which option it refused ("Requested node configuration is not available" is any
of cpus, memory, nodes): then the script is tried again without each option in turn, and the
first whose absence it accepts is named. The script is submitit's own
(`_make_sbatch_string`, the text its `sbatch` call reads), so the one tested is the one sent.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from scaling.jobs.executors import SBATCH_KEYS, make_executor

# Slurm keeps a job name of up to 1024 characters; its accounting database (sacct) a
# `tinytext`, 255 bytes: a task's name is cut to fit both.
NAME_MAX = 255
TEST_TIMEOUT_S = 30

# A reason that names its option: the sbatch option it is about. The first that matches
# decides ("Invalid account or account/partition combination" is the account's), so the
# partition, which other reasons mention in passing, comes last.
_REASONS = [(re.compile(p, re.I), opt) for p, opt in (
    (r"account", "account"), (r"\bqos\b|quality of service", "qos"), (r"feature", "constraint"),
    (r"reservation", "reservation"), (r"time limit|--time", "time"),
    (r"gres|generic resource", "gres|gpus_per_node|gpus|gpus_per_task"), (r"memory", "mem|mem_per_cpu|mem_per_gpu"),
    (r"license", "licenses"), (r"partition", "partition"))]


def task_name(sweep: str, run: str) -> str:
    """`<sweep>/<run>`, what squeue, sacct and `%x` show for a run's array task; the sweep's
    part is cut (with `~`) where the whole would pass Slurm's limit."""
    name = f"{sweep}/{run}"
    if len(name.encode()) <= NAME_MAX:
        return name
    keep = max(0, NAME_MAX - len(run.encode()) - 2)
    return (sweep.encode()[:keep].decode(errors="ignore") + "~/" + run).encode()[:NAME_MAX].decode(errors="ignore")


def _slurm_executor(settings, folder: Path, job_name: str, hold: bool = False):
    """submitit's SlurmExecutor for `settings` (nothing is written: submitit makes its folder
    when it submits)."""
    return make_executor("slurm", folder, settings, job_name, hold)._executor


def script(settings, folder: Path, job_name: str, count: int, hold: bool = False) -> str:
    """The sbatch script a launch of `count` runs with `settings` submits into `folder` (an
    array for two or more, as submitit makes it; held, as a launch submits it, with `hold`)."""
    return _script(_slurm_executor(settings, folder, job_name, hold), count)


def _script(ex, count: int, params: dict | None = None) -> str:
    from submitit.slurm.slurm import _make_sbatch_string   # submitit's own writer of the file

    return _make_sbatch_string(command=ex._submitit_command_str, folder=ex.folder,
                               map_count=count if count > 1 else None, **(ex.parameters if params is None else params))


def test_only(text: str) -> str | None:
    """Slurm's reason for refusing this script (`sbatch --test-only`), or None where it would
    take it, or where the cluster does not answer the test (then the submission says)."""
    try:
        r = subprocess.run(["sbatch", "--test-only"], input=text, capture_output=True, text=True,
                           timeout=TEST_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode == 0:
        return None
    why = reason(r.stderr or r.stdout) or f"sbatch --test-only exit {r.returncode}"
    # The test weighs the nodes as they are now: with nodes down or drained it refuses what
    # the real submission takes and queues until they are back (a relaunch during maintenance).
    # Only a request no node could ever meet is refused then, by the submission itself.
    if "node configuration is not available" in why and _some_node_unavailable():
        return None
    return why


_UNAVAILABLE = ("down", "drain", "fail", "maint", "unknown", "not_responding", "future", "power")


def _some_node_unavailable() -> bool:
    """A node of the cluster is down, drained, failing or otherwise out of service (sinfo)."""
    try:
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=TEST_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = r.stdout.lower().split()
    return any(s.endswith("*") or any(u in s for u in _UNAVAILABLE) for s in states)


def reason(text: str) -> str | None:
    """sbatch's first error line, its prefixes off (`invalid partition specified: gpu`)."""
    for ln in text.splitlines():
        ln = ln.strip()
        for prefix in ("sbatch: error: ", "Batch job submission failed: ", "allocation failure: ", "error: "):
            ln = ln.removeprefix(prefix)
        if ln and not ln.startswith(("Traceback", "File ", "submitit")):
            return ln
    return None


def refused_option(why: str, settings, folder: Path, job_name: str, count: int) -> tuple[str, object] | None:
    """(sbatch option, its value) that Slurm refused: the one the reason names, else the first
    whose absence makes `sbatch --test-only` accept the script. None where neither tells."""
    ex = _slurm_executor(settings, folder, job_name)
    params = dict(ex.parameters)
    extra = dict(params.get("additional_parameters") or {})
    asked = {k: v for k, v in params.items() if k in SBATCH_KEYS} | extra
    for pattern, opts in _REASONS:
        if pattern.search(why):
            named = [o for o in opts.split("|") if o in asked]
            if len(named) == 1:
                return named[0], asked[named[0]]
    for opt, value in asked.items():
        trial = {k: v for k, v in params.items() if k != opt}
        if opt in extra:
            trial["additional_parameters"] = {k: v for k, v in extra.items() if k != opt}
        if test_only(_script(ex, count, trial)) is None:
            return opt, value
    return None


def refusal_line(where: str, why: str, option: tuple[str, object] | None, extra_keys: set[str], runs: str) -> str:
    """`<file>: slurm.partition = 'gpu' (runs ...): sbatch refused it: <Slurm's reason>`."""
    if option is None:
        return f"{where}: sbatch refused the job{runs} ([executor] / [slurm]): {why}"
    opt, value = option
    key = f"slurm.extra.{opt}" if opt in extra_keys else SBATCH_KEYS.get(opt, f"slurm.{opt}")
    return f"{where}: {key} = {value!r}{runs}: sbatch refused it: {why}"


def name_tasks(names: dict[str, str]) -> dict[str, str]:
    """Give each array task (job id -> name) its own name; returns the ids Slurm renamed.
    A task it refuses keeps the array's name (status tells our jobs by name or submit time)."""
    done = {}
    for job_id, name in names.items():
        r = subprocess.run(["scontrol", "update", f"JobId={job_id}", f"JobName={name}"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            done[job_id] = name
    return done


def release(job_id: str) -> None:
    """Let a job (array) submitted held start."""
    subprocess.run(["scontrol", "release", job_id], capture_output=True, text=True)
