"""The base layer: what every other layer reads, torch-free and scheduler-free.

    errors.py     UserError, the one-line error a user sees (exit 2)
    config.py     TrainConfig: everything that determines a run, and its limits (one owner)
    shapes.py     the size rule, model shapes, exact parameter and FLOP counts
    flops.py      FlopCount: training FLOPs per token at any N (6ND, k N^e, encoder-decoder by shape)
    allocation.py the compute-optimal N, D and local slopes of a law under a FlopCount
    cost.py       what FLOPs cost: GPU peaks, GPU-hours, energy, CO2
    rundir.py     a run directory's files and statuses, atomic writes
    threads.py    how many CPU threads a run uses (one owner)
    signals.py    holding USR2 back until a step boundary
    intervals.py  the 95% percentile interval every bootstrap reports
"""
