"""Integration tests on a real Slurm cluster (slurm/start.sh starts one on this machine).

Skipped, with the reason, where no cluster is up; with CI set they FAIL instead, so CI
cannot pass by skipping them. Tiny real runs (100K parameters, bytes, seq_len 32): a job
array collected into results; a run preempted with USR2 that checkpoints, is requeued and
resumes to the same result as an uninterrupted twin; one at its time limit, requeued and
finished with its status history; a run stopped by a plain `scancel`, saved, followed by
`sweep logs --follow` and resumed by a relaunch to its twin's digest; a run that raises (its
log by `sweep logs`); a run whose node goes down mid-job (last: it takes the node down and brings it back).
`scaling tune` on Slurm: a 2-size study as one array with a trial preempted and resumed
while `tune status` is polled; trials whose jobs die past their retries or are killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from scaling.cli import main
from scaling.base.errors import UserError
from scaling.base.rundir import checkpoint_info
from scaling.sweep.launch import launch, wait_for
from scaling.sweep.spec import load_sweep
from scaling.sweep.status import sweep_states
from sweep_files import QUICK_VAL, write_sweep_file

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
    # A job a failed test left queued would start later with its log directory gone (Slurm
    # fails it, "could not open stdout file") and take CPUs from the next tests: cancel it.
    jobs = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True).stdout.splitlines()
    ours = [ln.split()[0].removeprefix("JobId=") for ln in jobs if f"StdOut={d}/" in ln]
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def sweep_file(tmp_path: Path, shards: Path, name: str, body: str, train: str = "") -> Path:
    return write_sweep_file(tmp_path / f"{name}.toml", shards, name=name, kind="grid", body=body,
                            train=QUICK_VAL + train,
                            executor='default = "slurm"\ncpus_per_task = 1\ntime_min = 10')


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


@dataclass
class OneRun:
    """A one-run sweep on the cluster: its job, its run's name and steps, and the small record
    its job keeps (jobs/job.py), read as the job rewrites it."""

    out: Path
    job_id: str
    name: str
    steps: int

    def record(self) -> dict:
        try:
            return json.loads((self.out / "jobs" / f"{self.name}.json").read_text())
        except (OSError, ValueError):
            return {}

    def step(self) -> int:
        return self.record().get("step") or 0


def launch_one(f: Path, out: Path) -> OneRun:
    spec = load_sweep(f)
    res = launch(spec, "slurm", out, progress=False)
    ((job_id,), (name,)) = res.job_ids.values(), res.submitted
    return OneRun(out, job_id, name, spec.runs[0].tokens // 256)  # 8 sequences x 32 tokens a step


def scheduler_id(job_id: str) -> str:
    """The job's own id (an array task's %A), which listpids and process titles use."""
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%A"], capture_output=True, text=True).stdout.strip()


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


def refuse_first_requeue(tmp_path: Path, monkeypatch) -> None:
    """An `scontrol` ahead of the real one on the jobs' PATH (sbatch exports the submitter's
    environment) that refuses the first `requeue` as Slurm does for a moment, then passes
    everything through: the job must retry, not die."""
    real = shutil.which("scontrol")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "scontrol").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = requeue ] && mkdir "{shim}/refused" 2>/dev/null; then
          echo "Job can not be altered now, try again later" >&2
          exit 1
        fi
        exec {real} "$@"
    """))
    (shim / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")


def test_preempted_run_resumes_from_its_checkpoint(cluster, shards, tmp_path, monkeypatch):
    """USR2 mid-run: checkpointed, requeued (the first `scontrol requeue` refused, as Slurm
    sometimes does: retried), resumed at its step, the same tokens and about the same model
    as an uninterrupted twin."""
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")  # jobs report their step every second
    refuse_first_requeue(tmp_path, monkeypatch)
    body = """
        [grid]
        sizes = ["100K"]
        tokens = ["200K"]
    """
    launch(load_sweep(sweep_file(tmp_path, shards, "twin", body)), "slurm", tmp_path / "twin", progress=False)
    out = tmp_path / "pre"
    run = launch_one(sweep_file(tmp_path, shards, "pre", body), out)
    job_id, steps = run.job_id, run.steps

    # Interrupt mid-training, as a preemption or a time limit would.
    wait_until(lambda: run.step() >= 20, 150, "the run to train 20 steps")
    st = sweep_states(out)[0]
    assert st.state == "running" and 0 < st.tokens_seen < steps * 256
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)

    (st,) = wait_for(out, progress=False, poll_s=1, timeout_s=240)
    assert st.state == "completed", (st.state, st.error, job_log(out, job_id)[-3000:])
    rec = run.record()
    # checkpointed once mid-run, requeued once, and the second start resumed at that step
    assert rec["checkpointed"] == 1 and rec["requeues"] == 1 and st.requeues == 1, rec
    k = rec["checkpoint_steps"][0]
    assert 20 <= k < steps and rec["start_step"] == k, rec
    assert st.record["restarts"] == 1
    log = job_log(out, job_id)
    assert log.count("try again later; retrying") == 1 and log.count("Requeued job") == 1, log[-3000:]
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


def _step_pids(job_id: str) -> list[int]:
    """The processes of a job's step 0 (submitit's srun: the training process) on this node."""
    rows = subprocess.run(["scontrol", "listpids", scheduler_id(job_id)], capture_output=True, text=True).stdout.splitlines()[1:]
    return [int(r.split()[0]) for r in rows if len(r.split()) >= 3 and r.split()[2] == "0"]


def _elapsed_s(job_id: str) -> int:
    m = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%M"], capture_output=True, text=True).stdout.strip()
    days, _, hms = m.rpartition("-")
    parts = [int(x) for x in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return (int(days) if days else 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def test_a_job_at_its_time_limit_is_requeued_and_finishes_with_its_status_history(cluster, shards, tmp_path, monkeypatch):
    """A job reaching its time limit, without waiting minutes for one: once it trains, its
    training process is stopped (SIGSTOP) and its limit cut to 2 minutes past what it has run,
    so that less than submitit's 90 s signal delay plus one of Slurm's 30 s limit checks is
    left; Slurm sends USR2 at its next check, and its step daemon sends a stopped task SIGCONT
    with it (seen on 22.05: the task sleeps again and its handler runs). So the run makes no
    step until the signal has come: nothing is left to timing, a run cannot finish first. It
    checkpoints, submitit requeues it, the second start resumes there and finishes, and
    run.json tells the whole story."""
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    f = sweep_file(tmp_path, shards, "lim", """
        [grid]
        sizes = ["100K"]
        tokens = ["300K"]
    """)
    out = tmp_path / "lim"
    run = launch_one(f, out)
    job_id, steps, job_record = run.job_id, run.steps, run.record

    wait_until(lambda: (job_record().get("step") or 0) >= 1, 150, "the run to train")
    pids = _step_pids(job_id)
    assert pids, "no process in the job's step 0"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert (job_record().get("step") or 0) < steps
        limit_min = _elapsed_s(job_id) // 60 + 2
        subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={limit_min}"], check=True)
        wait_until(lambda: job_record().get("checkpointed"), 90, "Slurm's USR2 before the time limit, and a checkpoint")
    finally:
        for pid in pids:  # only if the signal never came: let the job end
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    # The requeued job gets a limit it can finish in (the cut one would signal it again).
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


def follow_log(out: Path, name: str, *extra: str) -> subprocess.Popen:
    """`scaling sweep logs OUT NAME --follow ...` as its own process (it runs until the job ends)."""
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "scaling.cli", "sweep", "logs", str(out), name, "--follow", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_scancel_saves_the_run_and_a_relaunch_resumes_with_the_same_digest(cluster, shards, tmp_path, monkeypatch, capsys):
    """Plain `scancel` (SIGTERM) mid-run: the run finishes its step, checkpoints and ends
    cancelled, and status shows the progress it saved; `sweep logs` printed its log while it
    ran, and `--follow` saw the stop and ended with the job. A plain relaunch resumes at the
    saved step and finishes with the tokens and the data digest of an uninterrupted twin (the
    digest proves it trained on exactly the examples the twin did), and no requeue."""
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    body = """
        [grid]
        sizes = ["100K"]
        tokens = ["200K"]
    """
    launch(load_sweep(sweep_file(tmp_path, shards, "twin", body)), "slurm", tmp_path / "twin", progress=False)
    f = sweep_file(tmp_path, shards, "can", body)
    out = tmp_path / "can"
    run = launch_one(f, out)
    wait_until(lambda: run.step() >= 20, 150, "the run to train 20 steps")

    capsys.readouterr()
    assert main(["sweep", "logs", str(out), run.name]) == 0   # a running run's log
    assert "Starting with JobEnvironment" in capsys.readouterr().out
    follower = follow_log(out, run.name, "--err")
    time.sleep(1)
    subprocess.run(["scancel", run.job_id], check=True)
    st = wait_until(lambda: (s := sweep_states(out)[0]).state != "running" and s, 60, "the job to end")
    assert st.state == "cancelled", (st.state, st.scheduler, st.error, job_log(out, run.job_id)[-3000:])
    followed, _ = follower.communicate(timeout=60)   # --follow ends by itself once the job has
    assert follower.returncode == 0 and "SIGTERM: stopping after this step" in followed, followed[-2000:]

    # stopped at a step boundary, checkpointed there; status shows that progress
    hist = st.record["history"]
    k = hist[-1]["step"]
    assert hist[-1]["status"] == "stopped" and 20 <= k < run.steps, hist
    assert json.loads((out / "runs" / run.name / "checkpoints" / "last.json").read_text())["step"] == k
    assert st.tokens_seen == k * 256
    assert main(["sweep", "status", str(out)]) == 0
    table = capsys.readouterr().out
    share = f"{k * 256 / (run.steps * 256):.0%}"
    assert f"({share})" in table and "1 runs: 1 cancelled" in table, table

    again = launch(load_sweep(f), "slurm", out, progress=False)   # a plain relaunch
    assert again.submitted == [run.name]
    (st,) = wait_for(out, progress=False, poll_s=1, timeout_s=240)
    (tw,) = wait_for(tmp_path / "twin", progress=False, poll_s=1, timeout_s=240)
    assert st.state == tw.state == "completed", (st.state, st.error)
    assert [(h["status"], h["step"]) for h in st.record["history"]] == [
        ("running", 0), ("stopped", k), ("running", k), ("completed", run.steps)]
    assert st.record["tokens_seen"] == tw.record["tokens_seen"] == run.steps * 256
    assert st.record["data_digest"] == tw.record["data_digest"]
    assert st.requeues == 0 and st.record["restarts"] == 1


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
    capsys.readouterr()
    assert main(["sweep", "status", str(out)]) == 0
    out_text = capsys.readouterr().out
    assert "failed" in out_text and "no GPU is visible" in out_text
    # the failed run's line, and status --json, say where its log is; `sweep logs --err` prints it
    log = out / "launches" / st.entry.job.launch / f"{st.job_id}_0_log.err"
    assert f"(log: {log})" in out_text, out_text
    assert main(["sweep", "status", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["log_err"] == str(log) and Path(got["log"]).is_file()
    assert main(["sweep", "logs", str(out), st.name, "--err"]) == 0
    assert "no GPU is visible" in capsys.readouterr().out


def job_diagnosis(run: OneRun, job_id: str) -> str:
    """What a test that timed out on a job prints: the scheduler's view, the job's record, the
    machine's busiest processes and the tail of the job's log, so a CI failure says why."""
    sq = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T %R %M"], capture_output=True, text=True).stdout.strip()
    ps = subprocess.run(["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    return (f"squeue: {sq or '(gone)'}\nrecord: {run.record()}\nbusiest processes:\n"
            + "\n".join(ln[:160] for ln in ps.splitlines()[:6]) + f"\nlog tail:\n{job_log(run.out, job_id)[-3000:]}")


def test_a_two_task_fsdp_job_is_preempted_requeued_and_resumed(cluster, shards, tmp_path, monkeypatch):
    """tasks_per_node = 2 with strategy = "fsdp": srun starts two tasks, Lightning's
    SLURMEnvironment ranks them (the path a 2-node job takes), each holds half of every block
    (FSDP2), and USR2 mid-run saves the sharded checkpoint, requeues the job, and the requeued
    job's two tasks resume at that step with the 1-task run's examples. (DDP's two tasks take the
    same Slurm path; they are compared with one process in test_ddp.py and run as one
    submitit job in test_sweep_launch.py.)"""
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    body = """
        [grid]
        sizes = ["100K"]
        tokens = ["100K"]
    """
    fsdp = 'strategy = "fsdp"'
    out = tmp_path / "fsdp"
    # A MASTER_PORT left in the submitting environment by an earlier DDP run, on a port now in
    # use: sbatch passes it to the job, whose tasks must not rendezvous on it (CI once failed so).
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    monkeypatch.setenv("MASTER_PORT", str(taken.getsockname()[1]))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with taken:
        run = launch_one(sweep_file(tmp_path, shards, "fsdp", "tasks_per_node = 2\n" + body, train=fsdp), out)
        job_id, steps = run.job_id, run.steps

        def trained_10() -> bool:
            if run.step() >= 10:
                return True
            if sweep_states(out)[0].state not in ("pending", "running"):
                pytest.fail(f"the 2-task job ended before 10 steps\n{job_diagnosis(run, job_id)}")
            return False

        try:
            wait_until(trained_10, 300, "the 2-task run to train 10 steps")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{job_diagnosis(run, job_id)}") from None
    assert sweep_states(out)[0].world == 2
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    (st,) = wait_for(out, progress=False, poll_s=1, timeout_s=300)
    assert st.state == "completed", (st.state, st.error, job_diagnosis(run, job_id))
    rec = run.record()
    assert rec["checkpointed"] == 1 and rec["requeues"] == 1 and rec["starts"] == 2, rec
    k = rec["checkpoint_steps"][0]
    assert 10 <= k < steps and rec["start_step"] == k, rec
    assert st.record["world_size"] == 2 and st.record["restarts"] == 1 and st.record["slurm_job_id"]
    assert st.record["config"]["strategy"] == "fsdp"

    # The twin: one task, same config, uninterrupted (submitted after, so it cannot take the
    # CPUs the 2-task job needs first).
    twin = tmp_path / "one"
    launch(load_sweep(sweep_file(tmp_path, shards, "one", body, train=fsdp)), "slurm", twin, progress=False)
    (tw,) = wait_for(twin, progress=False, poll_s=1, timeout_s=240)
    assert tw.state == "completed" and tw.record["world_size"] == 1
    assert st.record["tokens_seen"] == tw.record["tokens_seen"] == steps * 256
    assert st.record["data_digest"] == tw.record["data_digest"]
    assert st.record["val"]["mixed"]["loss"] == pytest.approx(tw.record["val"]["mixed"]["loss"], rel=0.05)


def test_the_sbatch_script_of_a_multi_node_ddp_sweep(tmp_path, shards):
    """nodes = 2, gpus_per_node = 8: the script submitit writes asks for 16 tasks, 8 GPUs per
    node, starts them with srun, and each task's run asks Lightning for 8 devices x 2 nodes."""
    import submitit

    from scaling.jobs.executors import make_executor

    f = sweep_file(tmp_path, shards, "big", "gpus_per_node = 8\nnodes = 2\n" + """
        [grid]
        sizes = ["100K"]
        tokens = ["200K"]
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
    # the submitting shell's rendezvous (sbatch exports it) is dropped before srun
    srun = next(i for i, ln in enumerate(lines) if ln.startswith("srun "))
    assert lines.index("unset MASTER_ADDR MASTER_PORT") < srun
    assert "--kill-on-bad-exit=1" in lines[srun].split()   # a rank that fails ends the job
    # A batch that 16 processes cannot share evenly is refused before anything is submitted.
    bad = sweep_file(tmp_path, shards, "bad", "gpus_per_node = 8\nnodes = 2\n" + """
        [grid]
        sizes = ["100K"]
        tokens = ["200K"]
    """)
    bad.write_text(bad.read_text().replace("batch_size = 8", "batch_size = 24"))
    with pytest.raises(UserError, match="batch_size \\(24\\) must be a multiple of the world size"):
        load_sweep(bad)
    assert isinstance(ex._executor, submitit.SlurmExecutor)


# ------------------------------------------------------------------ scaling tune on Slurm
def _tune_rows(out: Path) -> dict:
    from scaling.tuning.status import tune_status

    return {r["size"]["key"]: r["counts"] for r in tune_status(out)}


def _array_running(array: str) -> int:
    q = subprocess.run(["squeue", "-h", "-r", "-j", array, "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True)
    return len(q.stdout.split())


def preempt_array_task(task: str) -> None:
    """One USR2 to one array task's step (submitit runs the job under srun as step 0), as a
    preemption's warning signal reaches it. Not `scancel --signal=USR2 ARRAY_TASK`: while
    two or more tasks of the array wait, Slurm 22.05 delivers that signal but answers "Job
    can not be altered now, try again later", and scancel retries the request for ~45 s, so
    the requeued job gets a second USR2 soon after its restart (and the caller blocks). The
    task's own job id (%A) takes the same path; a bare array id signals every task. The step
    signal itself reached the task twice, 23 ms apart, in one of two runs: the job's USR2
    handler runs once per process (jobs/job.py once_per_process), which this exercises."""
    t = time.time()
    r = subprocess.run(["scancel", "--signal=USR2", f"{task}.0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.stderr, subprocess.run(["squeue", "-s", "-r"], capture_output=True, text=True).stdout)
    assert time.time() - t < 5, "scancel retried: the job may get the signal again after its requeue"


def _failure_evidence(out: Path, slots: list) -> str:
    """What a failed trial left: its error in the study, its jobs' scheduler states and log
    tails (tmp_path is removed after the test, so the message is all that survives)."""
    import optuna

    from scaling.tuning.study import storage

    parts = []
    for key in sorted({s["key"] for s in slots}):
        for t in optuna.load_study(study_name=f"lr-{key}", storage=storage(out)).get_trials():
            parts.append(f"{key} trial {t.number} {t.state.name}: {t.user_attrs.get('error', '')}")
    ids = ",".join(sorted({s["job"]["job_id"] for s in slots}))
    parts.append(subprocess.run(["sacct", "-n", "-P", "-j", ids, "-o", "JobID,State,ExitCode,NodeList,Elapsed"],
                                capture_output=True, text=True).stdout)
    for p in sorted((out / "launches").glob("*/*_log.*")):
        parts.append(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}")
    return "\n".join(parts)


def test_a_two_size_tune_study_as_one_array_with_a_trial_preempted(cluster, shards, tmp_path, monkeypatch, capsys):
    """`scaling tune --executor slurm`: 2 sizes x 2 trials go out as ONE job array with the
    --jobs limit as its throttle; one trial is preempted with USR2 mid-run, checkpoints, is
    requeued by submitit and resumes at its step, reporting to the same trial. `tune status`
    is polled the whole time: every slot counted once, nothing ever failed. A rerun while
    jobs are out submits nothing (the requeued trial included); a rerun after writes tuned.json."""
    import optuna

    from scaling.tuning.study import storage

    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    out = tmp_path / "tune"
    args = ["tune", "--sizes", "100K,150K", "--tokens", "150K", "--seq-len", "32", "--batch-size", "8",
            "--val-points", "3", "--trials", "2", "--jobs", "2", "--pruner", "none", "--executor", "slurm",
            "--corpus", str(shards), "--out", str(out)]
    t0 = time.time()
    assert main(args) == 0
    slots = json.loads((out / "tune.json").read_text())["slots"]
    ids = [s["job"]["job_id"] for s in slots]
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 1, ids  # one array for both sizes
    array = ids[0].split("_")[0]
    show = subprocess.run(["scontrol", "-o", "show", "job", array], capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=2" in show, show[:500]  # --jobs is the array's % limit

    def record(slot: dict) -> dict:
        try:
            return json.loads((out / slot["key"] / "jobs" / f"{slot['k']}.json").read_text())
        except (OSError, ValueError):
            return {}

    victim, signalled, rerun, seen = None, None, False, []
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = _tune_rows(out)
        seen.append(rows)
        for key, c in rows.items():
            # every slot is counted exactly once, in one state; no trial ever failed
            assert c["failed"] == 0, f"{key} {c}\n{_failure_evidence(out, slots)}"
            assert c["completed"] + c["running"] + c["pending"] + c["resumable"] + c["pruned"] == 2, (key, c)
            assert c["resumable"] == 0, (key, c)  # a requeued trial is submitit's, not a rerun's
        assert _array_running(array) <= 2
        if victim is None:
            victim = next((s for s in slots if record(s).get("trial") is not None and record(s).get("step", 0) >= 20
                           and record(s).get("step") < 500 and _array_running(s["job"]["job_id"])), None)
            if victim is not None:
                preempt_array_task(victim["job"]["job_id"])
                signalled = record(victim)
        elif not rerun and record(victim).get("checkpointed"):
            # checkpointed and requeued: its trial counts as running, and a rerun now adds nothing
            assert rows[victim["key"]]["running"] >= 1
            capsys.readouterr()
            assert main(args) == 0
            err = capsys.readouterr().err
            assert "not submitted again" in err and "resuming" not in err, err
            assert len(json.loads((out / "tune.json").read_text())["slots"]) == 4
            rerun = True
        if all(c["completed"] == 2 for c in rows.values()):
            break
        time.sleep(1)
    else:
        log = job_log(out, victim["job"]["job_id"])[-2000:] if victim else "no trial reached step 20"
        raise AssertionError(f"tune study not done after 300 s: {seen[-1]}; {log}")
    assert victim is not None and rerun, "no trial reached step 20 while running"

    rec = record(victim)
    n = rec["trial"]
    log = job_log(out, victim["job"]["job_id"])
    assert n == signalled["trial"]
    # checkpointed once at the step it had reached, requeued once, resumed there
    assert rec["checkpointed"] == 1 and rec["requeues"] == 1 and rec["starts"] == 2, (rec, log[-6000:])
    k = rec["checkpoint_steps"][0]
    assert signalled["step"] <= k < 150_000 // 256 and rec["start_step"] == k, (signalled, rec)
    # one checkpoint and one requeue, however often the signal arrived (see preempt_array_task)
    assert log.count("Calling checkpoint method") == 1 and log.count("Requeued job") == 1, log[-3000:]
    run = json.loads((out / victim["key"] / "trials" / str(n) / "run.json").read_text())
    assert run["status"] == "completed" and run["restarts"] == 1 and run["tokens_seen"] == 150_000 // 256 * 256
    for key in ("100K", "150K"):
        trials = optuna.load_study(study_name=f"lr-{key}", storage=storage(out)).get_trials()
        assert [t.state.name for t in trials] == ["COMPLETE"] * 2
        # each trial reported its 2 validation points once, the resumed one included
        assert all(list(t.intermediate_values) == [1, 2] for t in trials), [t.intermediate_values for t in trials]
    t = optuna.load_study(study_name=f"lr-{victim['key']}", storage=storage(out)).get_trials()[n]
    assert t.value == pytest.approx(run["val"]["mixed"]["loss"])

    # every job has ended: a rerun submits nothing and writes best.json and tuned.json
    capsys.readouterr()
    assert main(args) == 0
    got = capsys.readouterr()
    assert "nothing to do" in got.err and "best lr" in got.out, got
    doc = json.loads((out / "tuned.json").read_text())
    assert [s["key"] for s in doc["sizes"]] == ["100K", "150K"] and "lr" in doc["fits"]
    assert main(["tune", "status", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("2 studies: 4 completed, 0 running, 0 pending, 0 pruned, 0 failed")
    print(f"tune on slurm: {time.time() - t0:.0f} s")


def test_tune_trials_whose_jobs_die_are_marked_failed(cluster, shards, tmp_path, monkeypatch, capsys):
    """Two trials from a sweep file with `max_num_timeout = 0`: one is preempted past
    its retries (with time_min <= 10 submitit counts USR2 as a time limit: it checkpoints,
    then gives up), the other is killed without a word (kill -9 of its training process). `tune status` marks both
    failed, each with its reason, and counts nothing as running."""
    import optuna

    from scaling.tuning.study import storage

    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    f = sweep_file(tmp_path, shards, "die", """
        parallelism = 2
        [slurm]
        max_num_timeout = 0
        [grid]
        sizes = ["100K"]
        tokens = ["200K"]
    """)
    out = tmp_path / "die"
    assert main(["tune", "--sweep", str(f), "--trials", "2", "--pruner", "none", "--out", str(out)]) == 0
    slots = json.loads((out / "tune.json").read_text())["slots"]
    assert [s["job"]["executor"] for s in slots] == ["slurm"] * 2

    def record(slot: dict) -> dict:
        try:
            return json.loads((out / slot["key"] / "jobs" / f"{slot['k']}.json").read_text())
        except (OSError, ValueError):
            return {}

    def training(among: list) -> dict | None:
        # mid-run now (the other jobs on the cluster may let them run only one at a time)
        return next((s for s in among if 20 <= record(s).get("step", 0) and not record(s).get("checkpointed")
                     and _array_running(s["job"]["job_id"])), None)

    retried = wait_until(lambda: training(slots), 150, "a trial to train 20 steps")
    preempt_array_task(retried["job"]["job_id"])
    (other,) = [s for s in slots if s is not retried]
    killed = wait_until(lambda: training([other]), 150, "the other trial to train 20 steps")
    # Killed without a word: kill -9 of its training process. Any scancel, even
    # `--signal=KILL` (which Slurm turns into a cancel: SIGTERM first), lets it checkpoint
    # and stop, resumable.
    pids = _step_pids(killed["job"]["job_id"])
    assert pids, "no process in the job's step 0"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    rows = wait_until(lambda: (r := _tune_rows(out)["100K"])["failed"] == 2 and r, 90, "both trials to be marked failed")
    assert rows["running"] == rows["pending"] == rows["completed"] == 0, rows
    trials = optuna.load_study(study_name="lr-100K", storage=storage(out)).get_trials()
    errors = {t.number: t.user_attrs.get("error", "") for t in trials}
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"], errors
    # past its retries: it saved its checkpoint, was not requeued, and said why
    assert record(retried)["checkpointed"] == 1 and record(retried)["requeues"] == 0
    assert "timed-out too many times" in errors[record(retried)["trial"]], errors
    # killed: the reaper found its job gone
    assert killed["job"]["job_id"] in errors[record(killed)["trial"]] and "FAILED" in errors[record(killed)["trial"]], errors
    capsys.readouterr()
    assert main(["tune", "status", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("1 studies: 0 completed, 0 running, 0 pending, 0 pruned, 2 failed")
    # a rerun continues the study: failed trials do not count, so it submits two more (one array)
    assert main(["tune", "--sweep", str(f), "--trials", "2", "--pruner", "none", "--out", str(out)]) == 0
    again = json.loads((out / "tune.json").read_text())["slots"][2:]
    subprocess.run(["scancel", again[0]["job"]["job_id"].split("_")[0]], check=True)  # not needed further
    assert [s["k"] for s in again] == [2, 3] and len({s["job"]["job_id"].split("_")[0] for s in again}) == 1
    assert "2 trial job(s) submitted" in capsys.readouterr().out


# ------------------------------------------------------------------ a node lost mid-job
def _local_cluster_node() -> str | None:
    """The node, when the cluster is the lab's own one-node test cluster (slurm/start.sh):
    the only place a test may take a node down."""
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()
    named = any(line.split("=", 1)[-1].strip() == "scaling" for line in conf.splitlines() if line.startswith("ClusterName"))
    return nodes[0] if named and len(set(nodes)) == 1 else None


def _node_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("requeue", [True, False], ids=["slurm-requeues", "no-requeue"])
def test_a_run_whose_node_goes_down_mid_job_resumes(cluster, shards, tmp_path, monkeypatch, requeue):
    """The node dies under a training job, as a power loss would: slurmd, the job's
    slurmstepd and its processes are killed with SIGKILL (no signal, no checkpoint on the
    way out), and the node is marked DOWN; then slurmd comes back (slurm/start.sh, which
    resumes the node). Both ways a cluster can take it:
    - Slurm's default (JobRequeue=1): Slurm requeues the job itself. The run reads pending,
      a plain relaunch submits nothing more, and the job restarts when the node is back.
    - A job that may not be requeued (`scontrol update Requeue=0`, as on sites with
      JobRequeue=0): it ends NODE_FAIL, the run reads interrupted, and a plain relaunch
      (no --retry-failed) resubmits it.
    Either way the run resumes from its last periodic checkpoint and finishes with the exact
    token count. Last in this file: it takes the node down."""
    node = _local_cluster_node()
    if node is None:
        pytest.skip("takes a node down: only on the lab's own one-node test cluster (slurm/start.sh)")
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    f = sweep_file(tmp_path, shards, "lost", """
        [grid]
        sizes = ["100K"]
        tokens = ["400K"]
    """, train="checkpoint_every_s = 1")
    out = tmp_path / "lost"
    run = launch_one(f, out)
    job_id, name, steps, step = run.job_id, run.name, run.steps, run.step
    ckpt = out / "runs" / name / "checkpoints" / "last.ckpt"

    # The checkpoint's own step (last.json, written after it), not the job's progress report:
    # the report can be past 50 while the last save is still a few steps before it.
    wait_until(lambda: ckpt.exists() and (checkpoint_info(ckpt.parent.parent) or {}).get("step", 0) >= 50, 180,
               "a periodic checkpoint at step 50 or later")
    real = scheduler_id(job_id)
    if not requeue:
        subprocess.run(["scontrol", "update", f"JobId={real}", "Requeue=0"], check=True)
    pids = [ln.split()[0] for ln in subprocess.run(["scontrol", "listpids", real], capture_output=True,
                                                    text=True).stdout.splitlines()[1:] if ln.split()]
    # The node dies: the daemon first (so nothing reports), then the job's processes.
    subprocess.run(["pkill", "-KILL", "-x", "slurmd"])
    subprocess.run(["pkill", "-KILL", "-f", rf"slurmstepd: \[{real}\."])
    subprocess.run(["kill", "-KILL", *pids], capture_output=True)
    assert step() < steps, "the run ended before its node was lost"
    subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=test: node lost"], check=True)
    try:
        want = "pending" if requeue else "interrupted"
        try:
            st = wait_until(lambda: (s := sweep_states(out)[0]).state == want and s, 60, f"the run to read {want}")
        except AssertionError as e:
            s = sweep_states(out)[0]
            raise AssertionError(f"{e}: it reads {s.state} ({s.scheduler}, {s.error}); node {_node_state(node)}") from None
        if not requeue:
            assert "NODE_FAIL" in st.error and "relaunch resumes" in st.error, st.error
        again = launch(load_sweep(f), "slurm", out, progress=False)  # a plain relaunch, no --retry-failed
        assert again.submitted == ([] if requeue else [name]), again.submitted
    finally:
        up = subprocess.run([str(Path(__file__).parents[1] / "slurm" / "start.sh")], capture_output=True, text=True)
        assert up.returncode == 0, f"slurm/start.sh did not bring the node back: {up.stderr[-1000:]}"
    (st,) = wait_for(out, progress=False, poll_s=1, timeout_s=300)
    assert st.state == "completed", (st.state, st.error)
    hist = [(h["status"], h["step"]) for h in st.record["history"]]
    # the lost start never recorded its end; the second one resumed at a checkpointed step
    assert len(hist) == 3 and hist[0] == ("running", 0) and hist[2] == ("completed", steps), hist
    assert hist[1][0] == "running" and 50 <= hist[1][1] < steps, hist
    assert st.record["restarts"] == 1 and st.record["tokens_seen"] == steps * 256
