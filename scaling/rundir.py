"""A run directory: the unit every later step reads.

    runs/NAME/
      run.json          config, sizes, tokens, FLOPs, final validation losses, status
      metrics.parquet   one row per logged step, validation rows at log-spaced points
      checkpoints/last.ckpt   Lightning checkpoint with the data position (for resume)
      train.log         what the run printed

``status`` is one of ``running``, ``completed``, ``diverged``, ``failed``. Files are written
atomically (temp file + rename), so a reader never sees half a run.json.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from scaling.errors import UserError

# Read once, at import: os.umask() can only be read by setting it, which races with threads.
_UMASK = os.umask(0)
os.umask(_UMASK)


def usual_mode(path, directory: bool = False) -> None:
    """mkstemp/mkdtemp make 0600/0700 entries; results and caches are for the whole team:
    give them the mode any new file or directory would get (0666/0777 less the umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)

RUN_JSON = "run.json"
METRICS = "metrics.parquet"
CKPT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
# A run record's status. "preempted": checkpointed and requeued by submitit (USR2), resumed by
# the requeued job or a relaunch. "pruned": stopped early by its caller's verdict (TrainingRun's
# on_validation, a tuner's pruner): finished, not failed.
STATUSES = ("running", "completed", "diverged", "failed", "preempted", "pruned")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def write_parquet_atomic(df, path: Path) -> None:
    """Write a polars DataFrame atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.write_parquet(tmp)
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_run_json(run_dir: Path) -> dict | None:
    """The run's record, or None if the directory holds none yet.

    A run.json that exists but does not parse is a user-visible problem (someone edited or
    truncated it): raise with the path instead of treating the run as absent.
    """
    p = Path(run_dir) / RUN_JSON
    if not p.exists():
        return None
    try:
        rec = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: run record is not valid JSON ({e})") from None
    if not isinstance(rec, dict) or rec.get("status") not in STATUSES:
        raise UserError(f"{p}: run record has no valid 'status' (one of {', '.join(STATUSES)})")
    return rec


def last_checkpoint(run_dir: Path) -> Path | None:
    p = Path(run_dir) / CKPT_DIR / LAST_CKPT
    return p if p.exists() else None
