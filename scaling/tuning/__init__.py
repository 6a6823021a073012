"""`scaling tune`: Optuna studies of per-size hyperparameters, run as submitit jobs, and the
rules (power laws of N) that sweeps read back with `lr = { tuned = DIR }`.

    study.py    what a study is: sizes, search space, pruner, the journal, trial states
    jobs.py     one trial as a submitit job (asks the study itself, resumes after USR2)
    launch.py   `scaling tune`: submit the missing trials of every size as one batch of jobs
    status.py   dead-job reaping and the per-size summary of `scaling tune status`
    rules.py    best value per size, power-law fits with bootstrap intervals, tuned.json
    figures.py  loss against lr per size, with the fitted rule

Executors, Slurm states and the job that trains are scaling.jobs's, shared with sweeps; this
package imports nothing from scaling.sweep (a sweep reads tuned.json through rules.py).
"""
