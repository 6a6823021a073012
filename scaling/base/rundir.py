"""A run directory: the unit every later step reads.

    runs/NAME/
      run.json          config, sizes, tokens, FLOPs, final validation losses, status
      metrics.parquet   one row per logged step, validation rows at log-spaced points
      checkpoints/last.ckpt   Lightning checkpoint with the data position (for resume); deleted
                        when the run completes
      checkpoints/last.json   the step and tokens last.ckpt holds, written after it: what
                        `sweep status` shows as a stopped run's progress, without torch
      train.log         what the run printed
      model.safetensors the final weights (fp32), kept when a run completes (keep_weights)
      model.json        the model's shape, its objective and special ids: what loading needs
      tokenizer/        the shard directory's meta.json and tokenizer file(s), copied

The kept files are written model.json and tokenizer/ first, model.safetensors last: a
directory with model.safetensors holds a whole kept model (scaling/use/load.py reads it).

``status`` is a RunStatus (below). Files are written atomically (temp file + rename), so a
reader never sees half a run.json or half a checkpoint.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from scaling.base.errors import UserError, WriteError

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
CKPT_INFO = "last.json"    # beside last.ckpt: its step and tokens
WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
TOKENIZER_DIR = "tokenizer"
KEPT_FORMAT = 1            # model.json's "format": what this release reads and writes


def weight_bytes(n_params: int) -> int:
    """Disk a kept model's weights take: fp32, 4 bytes a parameter (the tokenizer is extra,
    a few MB at most). `sweep plan` shows a sweep's total."""
    return 4 * int(n_params)


class RunStatus(str, enum.Enum):
    """A run record's status: written by train (TrainingRun), read by status, collect and tune.

    A str, so ``RunStatus.COMPLETED == "completed"`` and run.json holds the plain word.
    """

    RUNNING = "running"        # training, or killed / stopped with a checkpoint: a rerun resumes
    STOPPED = "stopped"        # an attempt that ended on a signal, checkpointed (status history
                               # only: the record itself stays "running", which a rerun resumes)
    PREEMPTED = "preempted"    # checkpointed and requeued by submitit (USR2); the requeued job or
                               # a relaunch resumes it
    COMPLETED = "completed"    # trained to its budget and validated: the run's score is final
    DIVERGED = "diverged"      # a non-finite loss or gradient: finished, never retrained
    FAILED = "failed"          # an exception: retried only when asked (--retry-failed)
    PRUNED = "pruned"          # stopped early by its caller's verdict (a tuner's pruner):
                               # finished, not failed

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """TrainingRun.fit() returns the record as it is, without training again."""
        return self in (RunStatus.COMPLETED, RunStatus.DIVERGED, RunStatus.PRUNED)

    @property
    def resumable(self) -> bool:
        """Not finished and not failed: a plain rerun (or relaunch) carries on from the checkpoint."""
        return self in (RunStatus.RUNNING, RunStatus.STOPPED, RunStatus.PREEMPTED)

    @classmethod
    def of(cls, record: dict | None) -> "RunStatus | None":
        """The status of a record read by read_run_json (None for no record)."""
        return None if record is None else cls(record["status"])


STATUSES = tuple(s.value for s in RunStatus)


def temp_dir_beside(final: Path) -> Path:
    """A fresh directory next to `final`, to fill and then rename into place whole (the atomic
    directory write of shards and the corpus cache; a reader never sees half of one). Its mode
    is the usual one (mkdtemp's 0700 would make a shared cache private); its name,
    .FINAL.tmp-XXXX, marks a leftover of a killed builder."""
    tmp = Path(tempfile.mkdtemp(dir=Path(final).parent, prefix=f".{Path(final).name}.tmp-"))
    usual_mode(tmp, directory=True)
    return tmp


# Fault injection for the tests (tests/test_faults.py), off unless set: "ACTION@NAME:K" acts at
# the K-th atomic write, in this process, of a file whose path ends in NAME:
#   kill   SIGKILL this process half-way through the temp file (a kill -9, a node lost mid-write)
#   eio    fail the write with EIO (a disk error): the run fails with an error, as it would
FAULT_IN_WRITE = os.environ.get("SCALING_FAULT_IN_WRITE", "")
_writes: dict[str, int] = {}


def _fault(path: Path, tmp: Path) -> None:
    action, _, rest = FAULT_IN_WRITE.partition("@")
    name, _, k = rest.rpartition(":")
    if not path.as_posix().endswith(name):
        return
    _writes[name] = _writes.get(name, 0) + 1
    if str(_writes[name]) != k:
        return
    if action == "kill":
        with open(tmp, "r+b") as f:
            f.truncate(os.path.getsize(tmp) // 2)
            os.fsync(f.fileno())
        os.kill(os.getpid(), 9)
    elif action == "eio":
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(tmp))


# Errors that mean "this disk or directory refuses the write", not a bug: reported in one line.
_CANNOT_WRITE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def atomic_file(path: Path):
    """`with atomic_file(p) as tmp:` write `tmp` (a fresh file beside `p`); on leaving the block
    it is flushed to disk and renamed over `p` in one step, so a reader, or a rerun after a kill
    -9 or a full disk, sees the old file or the new one, never part of one. On an error the temp
    file is removed and `p` is untouched. The one owner of atomic file writes: run records,
    metrics, checkpoints, ledgers and tables all go through it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if e.errno in _CANNOT_WRITE:
            raise WriteError(f"{path}: cannot write ({os.strerror(e.errno)}); the previous file is intact") from None
        raise
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if FAULT_IN_WRITE:
            _fault(path, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)   # the data is on disk before the rename makes it visible
        finally:
            os.close(fd)
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e.errno in _CANNOT_WRITE:
            raise WriteError(f"{path}: cannot write ({os.strerror(e.errno)}); the previous file is intact") from None
        raise


def stale_temp_files(dir: Path) -> list[Path]:
    """Temp files atomic_file left behind in `dir` when its process was killed mid-write."""
    try:
        return [p for p in Path(dir).iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    except FileNotFoundError:
        return []


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def write_parquet_atomic(df, path: Path) -> None:
    """Write a polars DataFrame atomically."""
    with atomic_file(path) as tmp:
        df.write_parquet(tmp)


# metrics.parquet: one row per logged step ("train") and per validation point ("val").
METRICS_SCHEMA = {
    "split": "Utf8", "step": "Int64", "tokens": "Int64", "flops": "Float64", "lr": "Float64",
    "train_loss": "Float64", "train_loss_denoise": "Float64", "train_loss_clm": "Float64",
    "tokens_per_s": "Float64", "mfu": "Float64", "wall_s": "Float64",
    "val_loss": "Float64", "val_loss_denoise": "Float64", "val_loss_clm": "Float64",
    "val_bpb": "Float64", "val_bpb_denoise": "Float64", "val_bpb_clm": "Float64",
    "val_se": "Float64", "task_s": "Float64",
}
TASK_PREFIX = "task."   # a downstream task's columns: task.<name>.bpb, ... (docs/tasks.md)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """The run's metrics rows (RunRecorder's) as RUN/metrics.parquet, atomically."""
    import polars as pl

    schema = {k: getattr(pl, t) for k, t in METRICS_SCHEMA.items()}
    schema.update({k: pl.Float64 for k in sorted({k for r in rows for k in r if k.startswith(TASK_PREFIX)})})
    df = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)
    write_parquet_atomic(df, Path(run_dir) / METRICS)


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
    if not isinstance(rec, dict) or not isinstance(rec.get("status"), str) or rec["status"] not in STATUSES:
        raise UserError(f"{p}: run record has no valid 'status' (one of {', '.join(STATUSES)})")
    return rec


def write_checkpoint_info(run_dir: Path, step: int, tokens: int) -> None:
    """checkpoints/last.json: the step and tokens of the last.ckpt just written. Written after
    the checkpoint, so it never names a step the checkpoint does not hold (a kill between
    the two leaves it one checkpoint behind)."""
    from datetime import datetime, timezone

    atomic_write_json(Path(run_dir) / CKPT_DIR / CKPT_INFO, {
        "step": int(step), "tokens": int(tokens),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def checkpoint_info(run_dir: Path) -> dict | None:
    """What the run's last.ckpt holds ({"step", "tokens", "saved_at"}), read from last.json;
    None without a checkpoint (a completed run's is deleted; a corrupt one set aside) or
    without a readable last.json."""
    d = Path(run_dir) / CKPT_DIR
    if not (d / LAST_CKPT).exists():
        return None
    try:
        info = json.loads((d / CKPT_INFO).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("step"), int) else None


def branch_checkpoint(run_dir: Path, step: int) -> Path:
    """checkpoints/branch-STEP.ckpt of a wsd trunk: its state at the start of a branch's
    cooldown, kept after the trunk completes (the branch starts from it)."""
    return Path(run_dir) / CKPT_DIR / f"branch-{int(step)}.ckpt"


def last_checkpoint(run_dir: Path) -> Path | None:
    p = Path(run_dir) / CKPT_DIR / LAST_CKPT
    return p if p.exists() else None
