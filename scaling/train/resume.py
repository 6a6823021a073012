"""What a run directory already holds when a run starts, and what of it can be trusted.

* run.json: a run is only resumed with the same config identity (TrainConfig.identity); a
  directory that holds something else is refused, not overwritten.
* Corrupt files (a truncated run.json, a checkpoint that fails its CRC) are damage from
  outside, since every write of the lab is atomic: each is renamed NAME.corrupt, kept for a
  post-mortem, named on stderr and in run.json's `set_aside`, and the run goes on without it.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError, WriteError
from scaling.base.rundir import (
    CKPT_DIR, LAST_CKPT, METRICS, MODEL_JSON, RUN_JSON, TOKENIZER_DIR, WEIGHTS, branch_checkpoint, last_checkpoint,
    read_run_json, stale_temp_files,
)
from scaling.train.callbacks.checkpointing import checkpoint_folder
from scaling.train.schedule import branch_step

# What a run directory may hold (besides dotfiles and files set aside with ASIDE).
RUN_FILES = {RUN_JSON, METRICS, CKPT_DIR, "train.log", WEIGHTS, MODEL_JSON, TOKENIZER_DIR}
ASIDE = ".corrupt"


class RunDirectory:
    """One run directory, read before training: its record, if it matches, and its checkpoint."""

    def __init__(self, path: Path, cfg: TrainConfig):
        self.path, self.cfg = Path(path), cfg
        self.set_aside: list[str] = []   # corrupt files of the run found by this start

    def matching_record(self) -> dict | None:
        """The run's record, or None for a new run; UserError if it is another run's."""
        try:
            rec = read_run_json(self.path)
        except UserError as e:
            # A truncated or edited run.json: say where, keep it aside for a post-mortem, and
            # go on as a run without a record (from its checkpoint if it has a good one).
            rec = None
            self._set_aside(self.path / RUN_JSON, str(e))
        if rec is None:
            if self.path.exists() and any(p.name not in RUN_FILES and not p.name.endswith(ASIDE)
                                          for p in self.path.iterdir() if not p.name.startswith(".")):
                raise UserError(f"{self.path}: directory exists and is not a run directory (no {RUN_JSON}); choose another --out")
            return None
        try:
            old = TrainConfig.from_dict({**rec.get("config", {}), "out": self.cfg.out})
        except (UserError, TypeError) as e:
            raise UserError(f"{self.path / RUN_JSON}: unreadable config ({e})") from None
        a, b = old.identity(), self.cfg.identity()
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            detail = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:4])
            raise UserError(f"{self.path}: existing run has a different config ({detail}); use a new --out")
        return rec

    def good_checkpoint(self, main: bool = True) -> Path | None:
        """checkpoints/last.ckpt if it is whole. A bad one is set aside and the run starts from
        scratch, which is the last state that can be trusted. A torch checkpoint is a zip
        archive: its directory and every member's CRC are checked (one read of the file, which
        the load that follows then finds in the page cache). Every rank of a DDP run checks,
        and comes to the same verdict; only the main one cleans up and moves files."""
        for tmp in stale_temp_files(self.path / CKPT_DIR) if main else []:
            tmp.unlink(missing_ok=True)   # a write killed half-way: never read, only in the way
        if self.cfg.strategy == "fsdp":
            return good_folder(self.path / CKPT_DIR, main, self._set_aside)
        path = last_checkpoint(self.path)
        if path is None:
            return None
        why = _damage(path)
        if why is None:
            return path
        if main:
            self._set_aside(path, f"{path}: checkpoint is corrupt ({why}); training restarts from step 0")
        return None

    def start_checkpoint(self, main: bool = True) -> Path | None:
        """The checkpoint this start trains on from: the run's own (good_checkpoint), else,
        for a branch of a wsd trunk, the trunk's at the step where this run's cooldown starts
        (the trunk's file is only read: its damage is the trunk's to repair)."""
        own = self.good_checkpoint(main)
        if own is not None or not self.cfg.branch_from:
            return own
        step = branch_step(self.cfg)
        path = branch_checkpoint(self.cfg.branch_from, step)
        if not path.exists():
            raise UserError(f"{path}: no checkpoint of the trunk at step {step}, where this branch's cooldown starts "
                            f"(the trunk has not reached it, or was not given branch_steps = [{step}])")
        why = _damage(path)
        if why is not None:
            raise UserError(f"{path}: the trunk's checkpoint is corrupt ({why}); rerun the trunk to write it again")
        return path

    def _set_aside(self, path: Path, why: str) -> None:
        """Rename a corrupt file of the run to NAME.corrupt and say so on stderr, with its path."""
        aside = path.with_name(path.name + ASIDE)
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            pass   # another rank of this run moved it first
        except OSError as e:
            raise WriteError(f"{path}: {why}, and it cannot be moved aside ({os.strerror(e.errno)})") from None
        self.set_aside.append(f"{why}; moved to {aside.name}")
        print(f"warning: {why}; moved to {aside}", file=sys.stderr)


def good_folder(ckpt_dir: Path, main: bool, set_aside) -> Path | None:
    """A sharded run's checkpoint folder (callbacks/checkpointing.checkpoint_folder), read as
    it is: every rank must come to the same path without waiting on rank 0's clean-up.
    Folders of saves killed half-way (.last.ckpt.tmp-*) are removed by rank 0; an incomplete
    last.ckpt is set aside (`set_aside(path, why)`) and the run starts from scratch."""
    path = checkpoint_folder(ckpt_dir / LAST_CKPT)
    if main and ckpt_dir.is_dir():
        for tmp in ckpt_dir.glob(f".{LAST_CKPT}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
    if path is None and main and (ckpt_dir / LAST_CKPT).exists():
        set_aside(ckpt_dir / LAST_CKPT, f"{ckpt_dir / LAST_CKPT}: sharded checkpoint is incomplete; "
                  "training restarts from step 0")
    return path


def _damage(path: Path) -> str | None:
    """Why a checkpoint (a zip archive) is not whole, or None: its directory and every member's
    CRC are checked."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return None if bad is None else f"member {bad} fails its CRC check"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
