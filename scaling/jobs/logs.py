"""Where a job's log is: submitit writes each task's stdout and stderr into the launch folder
as `<job id>_<task>_log.out` / `.err` (`53_1_0_log.out` for task 1 of array 53, `<pid>_0_...`
for a local job); rank 0's (task 0) is the run's. One file per job, appended across the
scheduler's requeues of it; a relaunch is a new job, in a new launch folder. A debug
(in-process) job has none: it printed to the terminal that launched it.
"""

from __future__ import annotations

from pathlib import Path

from scaling.jobs.executors import LAUNCHES
from scaling.jobs.ledger import Job


def log_path(dir: Path, job: Job, err: bool = False) -> Path | None:
    """The job's stdout (or stderr) log under the sweep directory DIR, where it is or will be;
    None for a debug job, which has none."""
    if job.executor == "debug":
        return None
    return Path(dir) / LAUNCHES / job.launch / f"{job.job_id}_0_log.{'err' if err else 'out'}"
