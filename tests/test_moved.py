"""Jobs pickled by release 0.1 still load after the code moved (scaling/moved.py).

tests/data/jobs-0.1/ holds a sweep job and a tune trial job as 0.1 pickled them, under the
old paths `scaling.sweep.jobs.TrainJob` and `scaling.tuning.jobs.TrialJob`: a job that was
pending or requeued across an upgrade is unpickled so by submitit. It must come back as
today's class with its config, and its fresh() copy (what a requeue submits) must work.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import submitit

DATA = Path(__file__).parent / "data" / "jobs-0.1"
CONFIG = {"params": "20K", "tokens": "40K", "out": "OUT/runs/20K-40K"}


def _load(name: str):
    delayed = submitit.helpers.DelayedSubmission.load(DATA / name)
    return delayed.function


def _has_config(job) -> bool:
    return all(job.config[k] == v for k, v in CONFIG.items())


def _fresh_works(job) -> None:
    fresh = job.fresh()
    assert type(fresh) is type(job) and fresh is not job
    assert fresh.config == job.config and fresh.record == job.record
    assert fresh._run is None
    again = pickle.loads(pickle.dumps(fresh))        # what submitit does with it
    assert type(again) is type(job) and again.config == job.config
    requeue = job.checkpoint()                       # no live run: nothing to save, a fresh job
    assert isinstance(requeue, submitit.helpers.DelayedSubmission)
    assert type(requeue.function) is type(job) and requeue.function.config == job.config


def test_a_sweep_job_pickled_by_0_1_loads_as_todays_train_job():
    from scaling.jobs.job import TrainJob

    job = _load("train_job.pkl")
    assert type(job) is TrainJob
    assert _has_config(job)
    assert job.record == "OUT/jobs/20K-40K.json"
    _fresh_works(job)


def test_a_trial_job_pickled_by_0_1_loads_as_todays_trial_job():
    from scaling.tuning.jobs import TrialJob

    job = _load("trial_job.pkl")
    assert type(job) is TrialJob
    assert _has_config(job)
    assert job.number == 3 and job.spec["key"] == "20K"
    _fresh_works(job)
    fresh = job.fresh()
    assert fresh.number == 3 and fresh.spec == job.spec


def test_an_old_module_path_is_the_module_that_holds_the_code_now():
    import scaling.base.config
    import scaling.config

    assert scaling.config is scaling.base.config
    assert importlib.import_module("scaling.sweep.jobs") is importlib.import_module("scaling.jobs.job")
