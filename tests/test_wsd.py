"""WSD runs and branching sweeps: the schedule's shape, a branch that equals a from-scratch WSD
run of its length, a branched sweep (local processes) preempted mid-trunk and mid-branch that
resumes to the same losses, `sweep plan`'s compute comparison, and the refusals."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError
from scaling.cli import main
from scaling.sweep.branches import branched_compute
from scaling.sweep.launch import launch
from scaling.sweep.spec import format_budget, load_sweep
from scaling.train.schedule import lr_at, make_plan

# One size, two budgets of 50 and 100 steps of 8 x 32 tokens: the 100-step run is the trunk, the
# 50-step one a branch of it from step 10. An 80% cooldown keeps the branch long enough to be
# preempted in a test this short.
SWEEP = """
[sweep]
name = "wsd"
kind = "grid"
vocab_size = 260
branches = true

[grid]
sizes = ["300K"]
tokens = ["12.8K", "25.6K"]

[train]
data = "{shards}"
seq_len = 32
batch_size = 8
schedule = "wsd"
cooldown_frac = 0.8
val_points = 3
val_examples = 32
log_every = 5
checkpoint_every_s = 0.1
keep_weights = false
progress = false

[executor]
parallelism = 1
time_min = 10
"""
TRUNK, BRANCH = "N300K-D25.6K", "N300K-D12.8K"


def sweep_file(folder: Path, shards: Path, **swap: str) -> Path:
    text = SWEEP.format(shards=shards)
    for old, new in swap.items():
        text = text.replace(old, new)
    f = folder / "wsd.toml"
    f.write_text(text)
    return f


def final_loss(rec: dict) -> float:
    return rec["val"]["mixed"]["loss"]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """The sweep's trunk and branch trained in this process, uninterrupted, and the branch's
    config trained from scratch."""
    from scaling.train.run import TrainingRun

    tmp = tmp_path_factory.mktemp("wsd")
    sweep = load_sweep(sweep_file(tmp, shards))
    trunk, branch = sweep.run(TRUNK), sweep.run(BRANCH)
    recs = {"trunk": TrainingRun(replace(trunk.config, out=str(tmp / "trunk"))).fit()}
    recs["branch"] = TrainingRun(replace(branch.config, out=str(tmp / "branch"), branch_from=str(tmp / "trunk"))).fit()
    recs["scratch"] = TrainingRun(replace(branch.config, out=str(tmp / "scratch"))).fit()
    return sweep, tmp, recs


def test_wsd_is_constant_then_cools_down_to_the_floor():
    peak, total, warmup, cool = 1.0, 100, 5, 20
    lrs = [lr_at(s, peak, total, warmup, 0.1, "wsd", cool, "1-sqrt") for s in range(total + 1)]
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == 1.0
    assert all(x == 1.0 for x in lrs[5:81])          # stable; the cooldown's first step too
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:]))
    assert lrs[100] == pytest.approx(0.1)
    # 1-sqrt falls fast at first, linear evenly: a quarter in, 1-sqrt has lost half its way
    assert lrs[85] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(85, peak, total, warmup, 0.1, "wsd", cool, "linear") == pytest.approx(0.1 + 0.9 * 0.75)
    plan = make_plan(TrainConfig(tokens=100 * 16 * 128, schedule="wsd", warmup_steps=5), 260)
    assert (plan.steps, plan.cooldown_steps, plan.warmup_steps) == (100, 20, 5)
    assert [plan.lr_factor(s) for s in range(101)] == lrs


def test_a_branch_equals_a_from_scratch_wsd_run_of_its_length(reference):
    sweep, tmp, recs = reference
    trunk, branch, scratch = recs["trunk"], recs["branch"], recs["scratch"]
    assert trunk["status"] == branch["status"] == scratch["status"] == "completed"
    step = sweep.run(BRANCH).branch_step
    assert step == 10 and sweep.run(TRUNK).config.branch_steps == (10,)
    # The branch trained only its cooldown, from the trunk's checkpoint ...
    assert [h["step"] for h in branch["history"]] == [step, 50]
    assert (tmp / "trunk" / "checkpoints" / "branch-10.ckpt").exists()
    assert not (tmp / "trunk" / "checkpoints" / "last.ckpt").exists()
    # ... on exactly the data of a run from scratch, to the same loss.
    assert branch["data_digest"] == scratch["data_digest"] and branch["tokens_seen"] == scratch["tokens_seen"]
    assert final_loss(branch) == pytest.approx(final_loss(scratch), rel=1e-6)
    assert final_loss(trunk) < final_loss(branch)


def _task_pid(out: Path) -> int | None:
    """The training task of the sweep's one local job (submitit's _submit process)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and str(out).encode() in cmd:
            return int(pid)
    return None


def _checkpointed(run: Path, past: int) -> bool:
    try:
        return json.loads((run / "checkpoints" / "last.json").read_text())["step"] > past
    except (OSError, ValueError, KeyError):
        return False


def test_a_branched_sweep_preempted_mid_trunk_and_mid_branch_completes_with_the_same_losses(reference, shards,
                                                                                              tmp_path):
    _, _, recs = reference
    f = sweep_file(tmp_path, shards)
    out = tmp_path / "out"
    # Preempt (SIGTERM to the training task, as Slurm does) the trunk once it has a checkpoint
    # before the branch point, then the branch once it has one of its own.
    plan = [(out / "runs" / TRUNK, 0), (out / "runs" / BRANCH, 10)]
    done = threading.Event()

    def preempt():
        while plan and not done.is_set():
            run, past = plan[0]
            pid = _task_pid(out)
            if pid is not None and _checkpointed(run, past):
                os.kill(pid, signal.SIGTERM)
                plan.pop(0)
                while _task_pid(out) == pid and not done.is_set():
                    time.sleep(0.05)
            time.sleep(0.02)

    watcher = threading.Thread(target=preempt, daemon=True)
    watcher.start()
    try:
        for _ in range(4):
            # The launch `scaling sweep launch --executor local` makes, polling its jobs often.
            launch(load_sweep(f), "local", out, progress=False, poll_s=0.2)
            runs = {n: json.loads((out / "runs" / n / "run.json").read_text()) for n in (TRUNK, BRANCH)
                    if (out / "runs" / n / "run.json").exists()}
            if len(runs) == 2 and all(r["status"] == "completed" for r in runs.values()):
                break
    finally:
        done.set()
    assert not plan, f"not preempted: {plan}"
    for name, ref in ((TRUNK, recs["trunk"]), (BRANCH, recs["branch"])):
        rec = runs[name]
        stops = [h["step"] for h in rec["history"] if h["status"] == "stopped"]
        assert rec["status"] == "completed" and len(stops) == 1, rec["history"]
        assert rec["data_digest"] == ref["data_digest"]
        assert final_loss(rec) == pytest.approx(final_loss(ref), rel=1e-6)
    assert [h["step"] for h in runs[BRANCH]["history"]][0] == 10   # started from the trunk's checkpoint
    assert main(["sweep", "collect", str(out)]) == 0
    import polars as pl

    table = pl.read_parquet(out / "results.parquet")
    assert table["schedule"].to_list() == ["wsd", "wsd"] and table["cooldown_frac"].to_list() == [0.8, 0.8]


def test_sweep_plan_prints_the_branched_compute_against_from_scratch(shards, tmp_path, capsys):
    f = sweep_file(tmp_path, shards, **{'tokens = ["12.8K", "25.6K"]': 'tokens = ["25.6K", "51.2K", "102.4K"]',
                                        '["300K"]': '["300K", "500K"]', "cooldown_frac = 0.8": "cooldown_frac = 0.5"})
    sweep = load_sweep(f)
    c = branched_compute(sweep.runs)
    # Per size, with a 50% cooldown: the 400-step trunk, a 100-step branch (its 50 cooldown
    # steps), a 200-step branch (100): 550 steps trained instead of 700.
    assert (c.trunks, c.branches) == (2, 4)
    assert c.branched == pytest.approx(c.scratch * 550 / 700)
    assert main(["sweep", "plan", str(f)]) == 0
    out = capsys.readouterr().out
    assert f"{c.saved:.0%} less" in out and "21% less" in out
    assert "cooldown from N300K-D102K @ step 50" in out and "trunk: every step" in out
    assert f"{format_budget(c.branched)} FLOPs to train" in out
    # Its time estimate counts what is trained: at 100 MFLOP/s and no start-up, 550 steps
    # of each size, not 700.
    slow = f.read_text().replace("time_min = 10", "time_min = 10\nachieved_flops = 1e8\noverhead_s = 0")
    f.write_text(slow)
    assert main(["sweep", "plan", str(f)]) == 0
    branched_s = _job_seconds(capsys.readouterr().out)
    f.write_text(slow.replace("branches = true", "branches = false"))
    assert main(["sweep", "plan", str(f)]) == 0
    assert branched_s / _job_seconds(capsys.readouterr().out) == pytest.approx(550 / 700, rel=0.01)


def _job_seconds(plan: str) -> float:
    """The plan's job time, as `_hms` prints it: 4m05s, 1h40m or 2.5d."""
    import re

    t = re.search(r"(\S+) of job time", plan).group(1)
    if t.endswith("d"):
        return float(t[:-1]) * 86400
    big, small = map(int, re.fullmatch(r"(\d+)[hm](\d+)[ms]", t).groups())
    return big * (3600 if "h" in t else 60) + small * (60 if "h" in t else 1)


@pytest.mark.parametrize("values,needle", [
    ({"schedule": "step"}, "schedule must be one of cosine, wsd, got 'step'"),
    ({"schedule": "wsd", "cooldown_shape": "cosine"}, "cooldown_shape must be one of 1-sqrt, linear"),
    ({"schedule": "wsd", "cooldown_frac": 0.0}, "cooldown_frac must be in (0, 1]"),
    ({"schedule": "wsd", "cooldown_frac": 0.99, "warmup_frac": 0.05}, "cooldown_frac (0.99) and warmup_frac (0.05) overlap"),
    ({"branch_from": "runs/trunk"}, "branch_from needs schedule wsd"),
    ({"schedule": "wsd", "branch_steps": (0,)}, "branch_steps must be a list of steps >= 1"),
    ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
])
def test_config_refusals_name_the_setting(values, needle):
    with pytest.raises(UserError, match=None) as e:
        TrainConfig.build(values, lambda key: f"--{key}")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_refusals_of_the_cli_and_the_sweep_file(shards, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--params", "300K", "--tokens", "8K", "--out", str(out), "--seq-len", "32",
                 "--schedule", "wsd", "--cooldown-frac", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --cooldown-frac must be in (0, 1], got 1.5"
    assert not out.exists()
    # A warmup that runs into the cooldown: refused by the plan, before the run directory.
    with pytest.raises(UserError, match="3 warmup steps run into the cooldown, which starts at step 2 of 4"):
        make_plan(TrainConfig(tokens=4 * 16 * 128, schedule="wsd", warmup_steps=3, cooldown_frac=0.5), 260)
    f = sweep_file(tmp_path, shards, **{'schedule = "wsd"': 'schedule = "cosine"'})
    assert main(["sweep", "plan", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {f}: sweep.branches: branches = true needs train.schedule = \"wsd\"") and "\n" not in err
    f = sweep_file(tmp_path, shards, **{"cooldown_frac = 0.8": "cooldown_frac = 0.8\nbranch_from = \"x\""})
    assert main(["sweep", "plan", str(f)]) == 2
    assert "train.branch_from: set by the sweep itself" in capsys.readouterr().err


def test_a_branch_without_its_trunks_checkpoint_is_refused_before_writing(reference, tmp_path):
    from scaling.train.run import TrainingRun

    sweep, _, _ = reference
    cfg = replace(sweep.run(BRANCH).config, out=str(tmp_path / "b"), branch_from=str(tmp_path / "no-trunk"))
    with pytest.raises(UserError, match=r"branch-10.ckpt: no checkpoint of the trunk at step 10"):
        TrainingRun(cfg).fit()
    assert not (tmp_path / "b").exists()


def test_a_branch_job_array_waits_for_its_trunks_slurm_job(tmp_path):
    """What sbatch is handed for the branches of a trunk queued as task 1 of array 53."""
    from scaling.jobs import sbatch
    from scaling.jobs.executors import ExecutorSettings
    from scaling.sweep.launch import waiting_for

    text = sbatch.script(waiting_for(ExecutorSettings(), "53_1"), tmp_path, "wsd", 2)
    assert "#SBATCH --dependency=afterok:53_1" in text and "#SBATCH --kill-on-invalid-dep=yes" in text
    assert "--dependency" not in sbatch.script(ExecutorSettings(), tmp_path, "wsd", 2)
