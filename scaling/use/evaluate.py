"""`evaluate(kept, tasks)`: a kept model scored on downstream tasks after the fact, by the
function a run scores them with at its validation points (scaling/train/task_scores.py), so
a completed run's model gives its last validation point's numbers again. `record_tasks` adds
the columns to the run's run.json ("tasks"), where `sweep collect` reads them.

    kept = scaling.load_run("runs/demo-cpu/runs/...")
    evaluate(kept, ["docsum", "my-task.jsonl"])   # {"task.docsum.bpb": ..., ...}
"""

from __future__ import annotations

from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import RUN_JSON, atomic_write_json, read_run_json
from scaling.data.builtin_tasks import BUILTIN, load_tasks
from scaling.data.tasks import encode_task
from scaling.train.task_scores import task_scores
from scaling.use.load import KeptModel


def evaluate(kept: KeptModel, names: list[str], data=None) -> dict[str, float]:
    """The columns of tasks `names` (built-in names, drawn from the validation split of
    `data`, default the run's shards; .jsonl task files) for the kept model."""
    data = data or kept.info.get("data")
    if any(n in BUILTIN for n in names) and not (data and Path(data).is_dir()):
        raise UserError(f"{kept.path}: built-in tasks are drawn from the run's shards, and {data or 'none'} is not "
                        f"here; pass the shard directory (--data)")
    tasks = [encode_task(t, kept.tokenizer, kept.objective.seq_len, kept.normalise) for t in load_tasks(names, data)]
    ids = {"pad": kept.objective.pad_id, "clm": kept.objective.clm_id}
    return task_scores(kept.model, tasks, ids, kept.device)


def record_tasks(run_dir, scores: dict[str, float]) -> None:
    """Merge `scores` into run.json's "tasks" (atomically; other tasks' columns kept)."""
    rec = read_run_json(run_dir)
    if rec is None:
        raise UserError(f"{run_dir}: no {RUN_JSON} to record the tasks in")
    rec["tasks"] = {**(rec.get("tasks") or {}), **scores}
    atomic_write_json(Path(run_dir) / RUN_JSON, rec)
