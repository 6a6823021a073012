"""A completed run's model, kept in its run directory: the final weights (model.safetensors,
fp32), what loading them needs (model.json: the shape, the objective, the special ids) and the
tokenizer (tokenizer/: the shard directory's meta.json and tokenizer file(s)). The names and
the order they are written in are scaling/base/rundir.py's; scaling/use/load.py reads them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from safetensors.torch import save_file

from scaling.base.rundir import (
    KEPT_FORMAT, MODEL_JSON, TOKENIZER_DIR, WEIGHTS, atomic_file, atomic_write_json, temp_dir_beside,
)
from scaling.data.layout import SPLITS, read_meta
from scaling.data.objectives import ObjectiveConfig

# The token arrays of a shard directory: everything else in it (meta.json, the tokenizer's
# file or files, whatever kind of tokenizer wrote them) is the tokenizer, and is copied.
_TOKEN_FILES = {f"{s}.bin" for s in SPLITS} | {f"{s}_docs.npy" for s in SPLITS}


def model_info(model, objective: ObjectiveConfig, meta: dict, record: dict) -> dict:
    """model.json: what `load_run` needs to rebuild the model and its inputs, and what it was.
    The special ids are the ones the run's objective used (from the shards' meta.json), never
    assumed; pad_id is also the one the model masked the encoder's padding with."""
    return {
        "format": KEPT_FORMAT,
        "run": record.get("name"),
        "model": model.cfg.to_dict(),
        "pad_id": int(model.pad_id),
        "objective": dataclasses.asdict(objective),
        "special_ids": {"pad_id": objective.pad_id, "eos_id": objective.eos_id, "clm_id": objective.clm_id,
                        "unk_id": meta.get("unk_id")},
        "tokenizer": meta["tokenizer"],
        "vocab_size": int(meta["vocab_size"]),
        "spoken": bool(meta.get("spoken", False)),
        "dtype": "float32",
        "n_params": model.cfg.n_params(),
        "steps": record.get("steps"),
        "tokens_seen": record.get("tokens_seen"),
        "val": record.get("val"),
        "data": record.get("data"),
    }


def copy_tokenizer(shards_dir: Path, dest: Path) -> None:
    """The shard directory's tokenizer into `dest`, whole or not at all (a temp directory
    renamed into place); an older copy is replaced."""
    shards_dir = Path(shards_dir)
    tmp = temp_dir_beside(dest)
    try:
        for f in sorted(shards_dir.iterdir()):
            if f.is_file() and f.name not in _TOKEN_FILES and not f.name.startswith("."):
                shutil.copy2(f, tmp / f.name)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def keep_model(run_dir, model, objective: ObjectiveConfig, shards_dir, record: dict, weights: dict | None = None) -> None:
    """Write the kept model of a completed run: tokenizer/ and model.json first, the weights
    last, each atomically, so a directory with model.safetensors holds all three. `weights`:
    the whole state dict when the model itself holds only this process's shards (FSDP)."""
    run_dir = Path(run_dir)
    meta = read_meta(shards_dir)
    copy_tokenizer(shards_dir, run_dir / TOKENIZER_DIR)
    atomic_write_json(run_dir / MODEL_JSON, model_info(model, objective, meta, record))
    # contiguous fp32 copies on the CPU: what safetensors writes, whatever the run's device
    # and precision (bf16-mixed keeps fp32 weights; the copy is exact).
    state = model.state_dict() if weights is None else weights
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    with atomic_file(run_dir / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "run": str(record.get("name"))})
