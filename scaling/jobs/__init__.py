"""Submitted jobs, the layer a sweep and a tune study share: where a job runs and what the
scheduler says of it, whatever the job trains.

    executors.py  local | slurm | debug; Resources and SlurmSettings (a sweep's [executor] and
                  [slurm]); one launch folder and submitit executor per launch
    sbatch.py     the sbatch script, `sbatch --test-only`, a refusal as one line naming the
                  sweep-file key; each array task's own name (<sweep>/<run>)
    states.py     Slurm and local job states, recycled job ids, a failed job's error line
    job.py        TrainJob: one TrainingRun as a submitit Checkpointable (USR2, requeue) and
                  its job record; the one seam where the trainer (and torch) enter a job
    ledger.py     a sweep directory's ledger: its runs and the jobs submitted for each
    logs.py       where a job's stdout and stderr logs are (submitit's files per launch)
    processes.py  a local job's processes and its launcher's: found, stopped at a step
                  boundary with one SIGTERM each, waited for (Ctrl-C, SIGTERM, cancel)

Above it, scaling.tuning and scaling.sweep submit through it; below it is the trainer, which
job.py imports only when a job starts training.
"""
