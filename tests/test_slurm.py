"""Integration tests on a real Slurm cluster (slurm/start.sh starts one on this machine).

Skipped, with the reason, where no cluster is up; with CI set they FAIL instead, so CI
cannot pass by skipping them. Tiny real runs (100K parameters, bytes, seq_len 32): a job
array collected into results; a run preempted with USR2 that checkpoints, is requeued and
resumes to the same result as an uninterrupted twin; one at its time limit, requeued and
finished with its status history; a cancelled run; a run that raises.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from scaling.cli import main
from scaling.errors import UserError
from scaling.sweep.launch import launch, wait_for
from scaling.sweep.spec import load_sweep
from scaling.sweep.status import sweep_states

pytestmark = pytest.mark.slurm


def cluster_down_reason() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm is not installed (sinfo/sbatch not found); start a local cluster with slurm/start.sh"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if "UP" not in ping.stdout:
        return f"no Slurm controller answers (scontrol ping: {ping.stdout.strip() or ping.stderr.strip()}); run slurm/start.sh"
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout.split()
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in node):
        return f"no usable Slurm node (states: {', '.join(node) or 'none'}); run slurm/start.sh"
    if shutil.which("sacct") is None or subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True).returncode:
        return "Slurm accounting (sacct/slurmdbd) is not answering; submitit needs it (slurm/start.sh sets it up)"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = cluster_down_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, but the Slurm cluster is not usable: {reason}")
        pytest.skip(reason)


@pytest.fixture
def tmp_path():
    """A private temporary directory. Not pytest's: pytest keeps only its 3 latest base
    directories, so a concurrent pytest session could delete one under a running job."""
    d = Path(tempfile.mkdtemp(prefix="scaling-slurm-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def shards(cluster):
    from test_sweep_launch import tiny_shards

    d = Path(tempfile.mkdtemp(prefix="scaling-slurm-data-"))
    yield tiny_shards(d / "shards")
    shutil.rmtree(d, ignore_errors=True)


def sweep_file(tmp_path: Path, shards: Path, name: str, body: str, train: str = "") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(textwrap.dedent(f"""
        [sweep]
        name = "{name}"
        kind = "grid"
        vocab_size = 260
        [train]
        data = "{shards}"
        seq_len = 32
        batch_size = 8
        val_points = 3
        val_examples = 32
        log_every = 50
        {train}
        [executor]
        default = "slurm"
        cpus_per_task = 1
        time_min = 10
    """) + textwrap.dedent(body))
    return p


def wait_until(pred, timeout_s: float, what: str, every: float = 0.5):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def job_log(out: Path, job_id: str) -> str:
    logs = list((out / "launches").glob(f"*/{job_id}_0_log.*"))
    return "".join(p.read_text(errors="replace") for p in logs)


def test_job_array_runs_and_collects(cluster, shards, tmp_path, capsys):
    f = sweep_file(tmp_path, shards, "arr", """
        [grid]
        sizes = ["100K", "150K"]
        tokens = ["30K"]
    """)
    out = tmp_path / "arr"
    res = launch(load_sweep(f), "slurm", out, progress=False)
    ids = sorted(res.job_ids.values())
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1, ids  # one job array
    # relaunch while they wait or run: nothing is submitted twice
    again = launch(load_sweep(f), "slurm", out, progress=False)
    assert again.submitted == [] and sum(map(len, again.skipped.values())) == 2
    assert set(again.skipped) <= {"pending", "running", "completed"}

    states = wait_for(out, progress=False, poll_s=1, timeout_s=240)
    assert [s.state for s in states] == ["completed", "completed"], [(s.name, s.state, s.error) for s in states]
    assert main(["sweep", "collect", str(out)]) == 0
    res = pl.read_parquet(out / "results.parquet")
    assert res["status"].to_list() == ["completed"] * 2 and res["loss"].is_not_null().all()
    assert res["tokens"].to_list() == [30_000 // 256 * 256] * 2 and res["device"].to_list()[0].startswith("cpu")
    for s in states:
        assert s.record["slurm_job_id"] and s.requeues == 0
    capsys.readouterr()
    assert main(["sweep", "status", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("2 runs: 2 completed")


def test_preempted_run_resumes_from_its_checkpoint(cluster, shards, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")  # jobs report their step every second
    body = """
        [grid]
        sizes = ["100K"]
        tokens = ["300K"]
    """
    launch(load_sweep(sweep_file(tmp_path, shards, "twin", body)), "slurm", tmp_path / "twin", progress=False)
    out = tmp_path / "pre"
    res = launch(load_sweep(sweep_file(tmp_path, shards, "pre", body)), "slurm", out, progress=False)
    (job_id,) = res.job_ids.values()
    (name,) = res.submitted
    record = out / "jobs" / f"{name}.json"
    steps = load_sweep(tmp_path / "pre.toml").runs[0].tokens // 256  # 8 sequences x 32 tokens a step

    def step() -> int:
        try:
            return json.loads(record.read_text()).get("step") or 0
        except (OSError, ValueError):
            return 0

    # Interrupt mid-training, as a preemption or a time limit would.
    wait_until(lambda: step() >= 20, 150, "the run to train 20 steps")
    st = sweep_states(out)[0]
    assert st.state == "running" and 0 < st.tokens_seen < steps * 256
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)

    (st,) = wait_for(out, progress=False, poll_s=1, timeout_s=240)
    assert st.state == "completed", (st.state, st.error, job_log(out, job_id)[-3000:])
    rec = json.loads(record.read_text())
    # checkpointed once mid-run, requeued once, and the second start resumed at that step
    assert rec["checkpointed"] == 1 and rec["requeues"] == 1 and st.requeues == 1, rec
    k = rec["checkpoint_steps"][0]
    assert 20 <= k < steps and rec["start_step"] == k, rec
    assert st.record["restarts"] == 1
    # run.json's status history: each start and how it ended, with its step and job
    assert [(h["status"], h["step"]) for h in st.record["history"]] == [
        ("running", 0), ("preempted", k), ("running", k), ("completed", steps)]
    assert {h["job"] for h in st.record["history"]} == {job_id}

    (tw,) = wait_for(tmp_path / "twin", progress=False, poll_s=1, timeout_s=240)
    assert tw.state == "completed" and tw.requeues == 0
    # the same tokens as the uninterrupted twin, and about the same model (most runs match to
    # the last digit; a resume that restarted from scratch or lost the optimizer would not)
    assert st.record["tokens_seen"] == tw.record["tokens_seen"] == steps * 256
    assert st.record["val"]["mixed"]["loss"] == pytest.approx(tw.record["val"]["mixed"]["loss"], rel=0.05)


def test_a_job_at_its_time_limit_is_requeued_and_finishes_with_its_status_history(cluster, shards, tmp_path, monkeypatch):
    """A job reaching its time limit: its limit is cut to 1 minute while it runs (`scontrol
    update`), less than the 90 s signal delay, so Slurm sends USR2 at its next check; the job
    checkpoints and submitit requeues it; the second start resumes there and finishes, and
    run.json tells the whole story. (A real 3-minute limit would cost minutes. About 65 s: the
    controller checks limits every 30 s, and with 300K tokens 2 of 4 runs had finished before
    the signal came.)"""
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    f = sweep_file(tmp_path, shards, "lim", """
        [grid]
        sizes = ["100K"]
        tokens = ["1M"]
    """)
    out = tmp_path / "lim"
    res = launch(load_sweep(f), "slurm", out, progress=False)
    (job_id,) = res.job_ids.values()
    (name,) = res.submitted
    record = out / "jobs" / f"{name}.json"
    steps = load_sweep(f).runs[0].tokens // 256

    def job_record() -> dict:
        try:
            return json.loads(record.read_text())
        except (OSError, ValueError):
            return {}

    # As soon as it trains: Slurm checks time limits every 30 s, and the run must still be
    # training when the signal comes (1M tokens: about 40 s of steps at least).
    wait_until(lambda: (job_record().get("step") or 0) >= 1, 150, "the run to train")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=1"], check=True)
    wait_until(lambda: job_record().get("checkpointed"), 90, "USR2 before the time limit, and a checkpoint")
    # The requeued job gets a limit it can finish in (the one minute would signal it again).
    wait_until(lambda: subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"],
                                      capture_output=True).returncode == 0, 30, "the requeued job's limit to be reset")
    (st,) = wait_for(out, progress=False, poll_s=1, timeout_s=240)
    assert st.state == "completed", (st.state, st.error, job_log(out, job_id)[-3000:])
    rec = job_record()
    k = rec["checkpoint_steps"][0]
    assert rec["requeues"] == 1 and rec["start_step"] == k and 0 < k < steps, rec
    assert [(h["status"], h["step"]) for h in st.record["history"]] == [
        ("running", 0), ("preempted", k), ("running", k), ("completed", steps)]
    assert {h["job"] for h in st.record["history"]} == {job_id}
    assert st.record["tokens_seen"] == steps * 256


def test_cancelled_run_is_reported_and_relaunched(cluster, shards, tmp_path, capsys):
    f = sweep_file(tmp_path, shards, "can", """
        [grid]
        sizes = ["100K"]
        tokens = ["3M"]
    """)
    out = tmp_path / "can"
    res = launch(load_sweep(f), "slurm", out, progress=False)
    (job_id,) = res.job_ids.values()
    wait_until(lambda: sweep_states(out)[0].state == "running", 120, "the job to run")
    subprocess.run(["scancel", job_id], check=True)
    st = wait_until(lambda: (s := sweep_states(out)[0]).state != "running" and s, 60, "the job to end")
    assert st.state == "cancelled", (st.state, st.scheduler, st.error)
    assert main(["sweep", "status", str(out)]) == 0
    assert "1 runs: 1 cancelled" in capsys.readouterr().out
    # a relaunch would submit it again (it resumes from its last checkpoint)
    assert launch(load_sweep(f), "slurm", out, dry_run=True).submitted == res.submitted


def test_a_job_that_raises_is_reported_failed_with_its_error(cluster, shards, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU to make a run fail")
    f = sweep_file(tmp_path, shards, "bad", """
        [grid]
        sizes = ["100K"]
        tokens = ["30K"]
    """, train='device = "cuda"')
    out = tmp_path / "bad"
    launch(load_sweep(f), "slurm", out, progress=False)
    (st,) = wait_for(out, progress=False, poll_s=1, timeout_s=180)
    assert st.state == "failed" and st.scheduler == "FAILED"
    assert "no GPU is visible" in st.error
    assert main(["sweep", "status", str(out)]) == 0
    out_text = capsys.readouterr().out
    assert "failed" in out_text and "no GPU is visible" in out_text


def test_a_two_task_ddp_job_is_preempted_requeued_and_resumed(cluster, shards, tmp_path, monkeypatch):
    """tasks_per_node = 2: srun starts two tasks, Lightning's SLURMEnvironment ranks them (the
    path a 2-node job takes), and USR2 mid-run checkpoints on rank 0, requeues the job, and the
    requeued job's two tasks resume at that step with the 1-task run's examples."""
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    body = """
        [grid]
        sizes = ["100K"]
        tokens = ["200K"]
    """
    out = tmp_path / "ddp"
    res = launch(load_sweep(sweep_file(tmp_path, shards, "ddp", "tasks_per_node = 2\n" + body)), "slurm", out,
                 progress=False)
    (job_id,) = res.job_ids.values()
    (name,) = res.submitted
    record = out / "jobs" / f"{name}.json"
    steps = load_sweep(tmp_path / "ddp.toml").runs[0].tokens // 256

    def step() -> int:
        try:
            return json.loads(record.read_text()).get("step") or 0
        except (OSError, ValueError):
            return 0

    wait_until(lambda: step() >= 20, 180, "the 2-task run to train 20 steps")
    assert sweep_states(out)[0].world == 2
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    (st,) = wait_for(out, progress=False, poll_s=1, timeout_s=300)
    assert st.state == "completed", (st.state, st.error, job_log(out, job_id)[-3000:])
    rec = json.loads(record.read_text())
    assert rec["checkpointed"] == 1 and rec["requeues"] == 1 and rec["starts"] == 2, rec
    k = rec["checkpoint_steps"][0]
    assert 20 <= k < steps and rec["start_step"] == k, rec
    assert st.record["world_size"] == 2 and st.record["restarts"] == 1 and st.record["slurm_job_id"]

    # The twin: one task, same config, uninterrupted (submitted after, so it cannot take the
    # CPUs the 2-task job needs first).
    twin = tmp_path / "one"
    launch(load_sweep(sweep_file(tmp_path, shards, "one", body)), "slurm", twin, progress=False)
    (tw,) = wait_for(twin, progress=False, poll_s=1, timeout_s=240)
    assert tw.state == "completed" and tw.record["world_size"] == 1
    assert st.record["tokens_seen"] == tw.record["tokens_seen"] == steps * 256
    assert st.record["data_digest"] == tw.record["data_digest"]
    assert st.record["val"]["mixed"]["loss"] == pytest.approx(tw.record["val"]["mixed"]["loss"], rel=0.05)


def test_the_sbatch_script_of_a_multi_node_ddp_sweep(tmp_path, shards):
    """nodes = 2, gpus_per_node = 8: the script submitit writes asks for 16 tasks, 8 GPUs per
    node, starts them with srun, and each task's run asks Lightning for 8 devices x 2 nodes."""
    import submitit

    from scaling.sweep.launch import make_executor

    f = sweep_file(tmp_path, shards, "big", "gpus_per_node = 8\nnodes = 2\n" + """
        [grid]
        sizes = ["100K"]
        tokens = ["300K"]
    """)
    f.write_text(f.read_text().replace("batch_size = 8", "batch_size = 64"))
    sweep = load_sweep(f)
    cfg = sweep.runs[0].config
    assert (cfg.devices, cfg.num_nodes, cfg.batch_size) == (8, 2, 64)
    ex = make_executor("slurm", tmp_path / "sub", sweep, "big")
    script = ex._executor._make_submission_file_text("python -u -m submitit.core._submit", "0")
    lines = script.splitlines()
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --ntasks-per-node=8" in lines, script
    assert "#SBATCH --gpus-per-node=8" in lines and "#SBATCH --signal=USR2@90" in lines
    assert any(ln.startswith("srun ") for ln in lines)
    # A batch that 16 processes cannot share evenly is refused before anything is submitted.
    bad = sweep_file(tmp_path, shards, "bad", "gpus_per_node = 8\nnodes = 2\n" + """
        [grid]
        sizes = ["100K"]
        tokens = ["300K"]
    """)
    bad.write_text(bad.read_text().replace("batch_size = 8", "batch_size = 24"))
    with pytest.raises(UserError, match="batch_size \\(24\\) must be a multiple of the world size"):
        load_sweep(bad)
    assert isinstance(ex._executor, submitit.SlurmExecutor)
