"""The launch ledger of a sweep directory: which runs exist, and which jobs were submitted
for each, so that relaunching is idempotent and `status` needs no sweep file.

    DIR/
      sweep.json          this ledger (written atomically after every submission)
      sweep.toml          the sweep file as last launched
      launches/<stamp>/   one fresh submitit folder per launch (pickles, logs, results)
      runs/<name>/        run directories (run.json, metrics.parquet, checkpoints/)
      jobs/<name>.json    what the run's latest job recorded: id, host, starts, checkpoints
      results.parquet, curves.parquet   from `scaling sweep collect`

A fresh submitit folder per launch matters: Slurm job ids restart at 1 when a cluster's
state is wiped, and an old folder would hand back an old job's result for a new id
(jobs/executors.new_launch_folder makes it). `Job` (one submitted job: executor, id, launch
folder, name) is shared with the tune ledger (tuning/status.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import atomic_write_json

LEDGER = "sweep.json"
RUNS = "runs"
JOBS = "jobs"
VERSION = 1


@dataclass
class Job:
    executor: str          # local | slurm | debug
    job_id: str            # Slurm "123_4" (array task), local pid, debug "-"
    launch: str            # launches/<stamp> folder name
    name: str              # Slurm job name (tells a recycled job id from ours)
    submitted_at: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RunEntry:
    name: str
    config: dict           # TrainConfig dict, `out` relative to the sweep directory
    n_params: int
    n_params_nonembed: int
    flops_per_token: float
    budget: float | None
    jobs: list[Job] = field(default_factory=list)

    @property
    def job(self) -> Job | None:
        return self.jobs[-1] if self.jobs else None

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "jobs"}
        d["jobs"] = [j.to_dict() for j in self.jobs]
        return d


@dataclass
class Ledger:
    dir: Path
    sweep: str
    kind: str
    runs: dict[str, RunEntry] = field(default_factory=dict)
    launches: list[dict] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.dir / LEDGER

    def run_dir(self, name: str) -> Path:
        return self.dir / RUNS / name

    def job_record(self, name: str) -> Path:
        return self.dir / JOBS / f"{name}.json"

    def save(self) -> None:
        atomic_write_json(self.path, {
            "version": VERSION, "sweep": self.sweep, "kind": self.kind,
            "launches": self.launches,
            "runs": {n: r.to_dict() for n, r in self.runs.items()},
        })


def load_ledger(dir: Path) -> Ledger | None:
    path = Path(dir) / LEDGER
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        led = Ledger(Path(dir), d["sweep"], d["kind"], launches=list(d.get("launches", [])))
        for name, r in d["runs"].items():
            jobs = [Job(**j) for j in r.pop("jobs", [])]
            led.runs[name] = RunEntry(**r, jobs=jobs)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a valid sweep ledger ({type(e).__name__}: {e})") from None
    return led
