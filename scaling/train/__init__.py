"""The train layer: one run, trained with Lightning. The only package that imports torch.

    run.py          TrainingRun: the lifecycle of a run (start here)
    schedule.py     the run's plan: shape, steps, batch split, lr schedule (torch-free)
    resume.py       what a run directory holds: matching record, corrupt files, checkpoint
    record.py       run.json: how each start began and ended
    trainer.py      the Lightning Trainer, wired once
    module.py       the math of a step (LightningModule)
    stream.py       each process's micro-batches, resumable at a step
    validation.py   how a run is scored
    task_scores.py  how a model is scored on downstream tasks (runs and kept models)
    digest.py       proof of the data position
    speed.py        peak FLOP/s and MFU
    callbacks/      recorder, checkpointing, progress: one callback per concern
    model.py        the encoder-decoder Transformer (torch modules)
    distributed.py  which process this is; local DDP workers
    worker.py       a DDP worker's entry point

Nothing here is imported at package import: `import scaling.train.schedule` stays torch-free.
"""
