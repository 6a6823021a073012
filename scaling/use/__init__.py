"""Models you keep: a completed run's kept model loaded for inference, and what is done with it.

    load.py      load_run(run_dir, device) -> KeptModel (.model in eval mode, .tokenizer, .config)
    score.py     loss and bits per byte of documents, per objective (`scaling score`)
    evaluate.py  downstream tasks' scores of a kept model, into its run.json (`scaling eval`)
    generate.py  CLM continuation and denoising gap filling with a KV cache (`scaling generate`)
    export.py    the model as a Hugging Face `transformers` Blenderbot, checked by equal logits

The files a run keeps are scaling/base/rundir.py's; scaling/train/keep.py writes them. The
package's `__init__` imports nothing, so `scaling.load_run` (a lazy attribute of `scaling`)
loads torch only when called.
"""
