"""One training run end to end on the embedded corpus: loss falls, records are complete,
a killed run resumes to the same result, bad inputs fail cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from scaling.cli import main
from scaling.train.model import ModelConfig

# Small enough for a 2-core CI machine, long enough for the loss to fall well.
ARGS = ["--params", "500K", "--tokens", "120K", "--seq-len", "64", "--batch-size", "16",
        "--val-points", "5", "--no-progress"]


def _train(out: Path, *extra: str) -> int:
    return main(["train", *ARGS, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "500K-120K"
    assert _train(out) == 0
    return out


def test_run_completes_and_loss_falls(finished):
    rec = json.loads((finished / "run.json").read_text())
    assert rec["status"] == "completed" and rec["error"] is None
    cfg = ModelConfig(**rec["model"])
    assert rec["n_params"] == cfg.n_params() and rec["n_params_nonembed"] == cfg.n_params(embeddings=False)
    assert rec["tokens_seen"] == rec["steps"] * 16 * 64 <= 120_000
    assert rec["flops"] == pytest.approx(rec["tokens_seen"] * rec["flops_per_token"])
    m = pl.read_parquet(finished / "metrics.parquet")
    val = m.filter(pl.col("split") == "val").sort("step")
    assert val["step"][0] == 0 and val["step"][-1] == rec["steps"]
    assert len(val) >= 4  # log-spaced points for Approach 1
    first, last = val["val_loss"][0], val["val_loss"][-1]
    assert last < 0.8 * first, (first, last)
    for task in ("mixed", "denoise", "clm"):
        v = rec["val"][task]
        assert 0 < v["loss"] < first and 0 < v["bpb"] < v["loss"] * 2
    assert rec["val"]["mixed"]["loss"] == pytest.approx(last)
    train = m.filter(pl.col("split") == "train")
    assert train["tokens"].is_sorted() and (train["tokens_per_s"] > 0).all()
    assert train["lr"].max() <= rec["lr"] * 1.0001
    # schedule ends at the budget: 10% of peak at the last step
    assert train.sort("step")["lr"][-1] == pytest.approx(0.1 * rec["lr"], rel=0.05)
    assert not (finished / "checkpoints" / "last.ckpt").exists()


def test_completed_run_is_not_retrained(finished, capsys):
    before = (finished / "run.json").read_text()
    t = time.time()
    assert _train(finished) == 0
    assert time.time() - t < 20
    assert (finished / "run.json").read_text() == before
    assert "completed" in capsys.readouterr().out


def test_resume_after_kill_gives_the_same_run(finished, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "scaling.cli", "train", *ARGS, "--out", str(out), "--checkpoint-every", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "running"  # killed: not completed, not failed
    assert _train(out) == 0
    resumed = json.loads((out / "run.json").read_text())
    ref = json.loads((finished / "run.json").read_text())
    assert resumed["status"] == "completed" and resumed["restarts"] == 1
    assert resumed["tokens_seen"] == ref["tokens_seen"]
    # Exactly the same target tokens in the same order (a rolling digest of every batch)...
    assert resumed["data_digest"] == ref["data_digest"]
    # ... and the same optimizer state: the same final loss, up to CPU float nondeterminism
    # (thread-dependent summation order), which grows over a run to well under 5%.
    assert resumed["val"]["mixed"]["loss"] == pytest.approx(ref["val"]["mixed"]["loss"], rel=0.05)
    steps = pl.read_parquet(out / "metrics.parquet").filter(pl.col("split") == "val")["step"].to_list()
    assert steps == sorted(set(steps))  # no duplicated rows after the resume


def test_existing_run_with_other_config_is_refused(finished, capsys):
    rc = main(["train", *ARGS[:-1], "--lr", "0.01", "--out", str(finished), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "different config" in err and "\n" not in err
    assert json.loads((finished / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--params", "12Q", "--tokens", "1M"], "--params"),
        (["--params", "2M", "--tokens", "lots"], "--tokens"),
        (["--params", "2M", "--tokens", "100"], "--tokens: 100 tokens is less than one batch"),
        (["--params", "2M", "--tokens", "1M", "--corpus", "does/not/exist"], "data does/not/exist: no such directory"),
        (["--params", "2M", "--tokens", "1M", "--clm-ratio", "1.5"], "--clm-ratio"),
    ],
)
def test_bad_inputs_exit_2_without_a_run(tmp_path, capsys, argv, needle):
    out = tmp_path / "bad"
    assert main(["train", *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err
    assert not (out / "run.json").exists()


def test_empty_corpus_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--params", "2M", "--tokens", "1M", "--corpus", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "r" / "run.json").exists()


def test_divergence_is_recorded(tmp_path):
    """An absurd learning rate without clipping blows the loss up: status diverged."""
    from scaling.base.config import TrainConfig
    from scaling.train.run import TrainingRun

    cfg = TrainConfig(params="300K", tokens=30_000, out=str(tmp_path / "div"), seq_len=32, lr=1e4,
                      grad_clip=0.0, warmup_frac=0.0, val_points=3, val_examples=16, progress=False, log_every=1)
    run = TrainingRun(cfg)
    rec = run.fit()
    assert rec["status"] == "diverged" and "non-finite" in rec["error"]
    assert rec["tokens_seen"] < 30_000
    # Caught before the optimizer update: the weights the run stopped with are all finite
    # (the NaN gradient never reached them), so its last checkpointable state is usable.
    import torch

    assert all(torch.isfinite(p).all() for p in run.module.model.parameters()), rec["error"]


@contextlib.contextmanager
def poisoned_step(seen: dict, then=None):
    """Step 4's loss made NaN (its gradient with it); `then(module)` runs in each later step.
    `seen` gets the weights and AdamW's state as they were before step 4's update."""
    import torch

    from scaling.train.module import EncoderDecoderModule

    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t   # a sharded run's DTensor

    real = EncoderDecoderModule.training_step

    def poisoned(self, batch, batch_idx):
        out = real(self, batch, batch_idx)
        if self.global_step == 3:
            seen["weights"] = [local(p).detach().clone() for p in self.model.parameters()]
            seen["adam"] = adam_state(self.trainer.optimizers[0], local)
            out["loss"] = out["loss"] * float("nan")
        elif self.global_step > 3 and then is not None:
            then(self)
        return out
    EncoderDecoderModule.training_step = poisoned
    try:
        yield local
    finally:
        EncoderDecoderModule.training_step = real


def adam_state(opt, local) -> list:
    """AdamW's step, exp_avg and exp_avg_sq of every parameter, copied."""
    return [local(t).detach().clone() for p in opt.state for t in opt.state[p].values()]


def _equal(a: list, b: list) -> bool:
    import torch

    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("log_every,strategy", [(1, "ddp"), (5, "ddp"), (5, "fsdp")])
def test_a_nan_gradient_never_reaches_the_weights(tmp_path, log_every, strategy):
    """One poisoned step: its update is skipped entirely (no decay, no Adam step: AdamW's step,
    exp_avg and exp_avg_sq stay as they were), and the run stops as diverged with the weights
    of the step before. The skip is decided on the device; the host learns of it at the next
    logging step (log_every 5: step 5), and no update is applied in between. Sharded too (one
    process: FSDP2's DTensor parameters and optimizer state)."""
    from scaling.base.config import TrainConfig
    from scaling.train.run import TrainingRun

    seen = {}
    with poisoned_step(seen) as local:
        cfg = TrainConfig(params="300K", tokens=20_480, out=str(tmp_path / "nan"), seq_len=32, batch_size=8,
                          val_points=2, val_examples=16, progress=False, log_every=log_every, strategy=strategy)
        run = TrainingRun(cfg)
        rec = run.fit()
    assert rec["status"] == "diverged" and rec["error"].startswith("gradient became non-finite at step 4"), rec["error"]
    assert rec["tokens_seen"] == (4 if log_every == 1 else 5) * 8 * 32   # stopped at the logging step
    assert _equal([local(p) for p in run.module.model.parameters()], seen["weights"])
    assert len(seen["adam"]) == 3 * len(seen["weights"])
    assert _equal(adam_state(run.trainer.optimizers[0], local), seen["adam"])


@pytest.mark.parametrize("stop", ["sigterm", "checkpoint"])
def test_a_skipped_step_is_not_forgotten_by_a_stop_or_a_checkpoint(tmp_path, stop):
    """Step 4 is poisoned and the run stops before its next logging step (10): by SIGTERM
    after step 5, or abruptly in step 5 after a checkpoint at step 4 (which holds step 4's
    count but step 3's weights). Either way the run ends diverged, also after a rerun that
    resumes; never "completed" with the skipped steps' data and schedule silently lost."""
    from scaling.base.config import TrainConfig
    from scaling.train.run import TrainingRun

    def sigterm(module):
        if module.global_step == 4:
            os.kill(os.getpid(), signal.SIGTERM)   # the handler asks to stop at this step's end

    def killed(module):
        if module.global_step == 4:
            raise RuntimeError("killed")   # after step 4's checkpoint

    cfg = TrainConfig(params="300K", tokens=12 * 8 * 32, out=str(tmp_path / "r"), seq_len=32, batch_size=8,
                      val_points=2, val_examples=16, progress=False, log_every=10,
                      checkpoint_every_s=60.0 if stop == "sigterm" else 1e-6)
    with poisoned_step({}, sigterm if stop == "sigterm" else killed):
        if stop == "sigterm":
            first = TrainingRun(cfg).fit()
            assert first["status"] == "diverged" and first["tokens_seen"] == 5 * 8 * 32, first
        else:
            with pytest.raises(RuntimeError, match="killed"):
                TrainingRun(cfg).fit()
            assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "failed"
    rec = TrainingRun(cfg).fit()   # a plain rerun: resumes a failed run from its checkpoint
    assert rec["status"] == "diverged", rec
    assert rec["error"].startswith("gradient became non-finite at step 4"), rec["error"]
    assert rec["tokens_seen"] == (5 if stop == "sigterm" else 4) * 8 * 32   # nothing trained after the resume


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path):
    """`kill` (or Ctrl-C) on a laptop run: finish the step, save, say so, exit 1; rerun resumes."""
    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "scaling.cli", "train", "--params", "300K", "--tokens", "400K", "--seq-len", "32",
           "--batch-size", "8", "--val-points", "3", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        rec = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else None
        if rec is not None:
            break
        time.sleep(0.2)
    time.sleep(4.0)  # well into training
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 1
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "running" and rec["error"].startswith("stopped at step")
    assert 0 < rec["tokens_seen"] < 400_000
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_one_owner_for_the_limits_of_a_run(capsys):
    """TrainConfig.check is the one place the limits live: the CLI names the flag, a sweep
    file its key (tests/test_sweep_spec.py), and the trainer refuses a bad config itself."""
    from scaling.cli import main
    from scaling.base.config import TrainConfig
    from scaling.base.errors import UserError
    from scaling.train.run import TrainingRun

    for args, words in ((["--clm-ratio", "2"], "--clm-ratio must be in [0, 1], got 2"),
                        (["--lr", "0"], "--lr must be > 0"),
                        (["--seq-len", "8"], "--seq-len must be >= 16"),
                        (["--checkpoint-every", "0"], "--checkpoint-every must be > 0")):
        assert main(["train", "--params", "20K", "--tokens", "10K", "--out", "/nonexistent/x", *args]) == 2
        assert words in capsys.readouterr().err
    with pytest.raises(UserError, match="noise_density must be in \\(0, 0.5\\), got 0.6"):
        TrainingRun(TrainConfig(noise_density=0.6, out="/nonexistent/y")).fit()
    assert TrainConfig().check() is not None and TrainConfig(lr=None).check().lr is None


def test_in_process_run_gives_the_callers_signal_handlers_back(tmp_path):
    """tune --jobs 1, the demo or a notebook trains in-process: after the run, SIGINT and
    SIGTERM must reach the caller's handlers again, not a finished trainer's."""
    from scaling.base.config import TrainConfig
    from scaling.train.run import TrainingRun

    def mine(signum, frame):
        pass
    old = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        cfg = TrainConfig(params="300K", tokens=8_192, out=str(tmp_path / "r"), seq_len=32, batch_size=8,
                          val_points=2, val_examples=16, progress=False)
        assert TrainingRun(cfg).fit()["status"] == "completed"
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_checkpoint_after_the_final_validation_resumes_as_completed(tmp_path):
    """A checkpoint written after the last step's validation (USR2 at the very end of a job)
    holds the final score in its rows: a resumed run, with no step left, must take it rather
    than end 'stopped at step N of N' on every rerun."""
    from scaling.base.config import TrainConfig
    from scaling.train.callbacks.recorder import RunRecorder
    from scaling.train.stream import BatchStream
    from scaling.data.objectives import ObjectiveConfig
    from scaling.data.shards import resolve_data
    from scaling.train.schedule import make_plan

    cfg = TrainConfig(params="300K", tokens=8_192, out=str(tmp_path / "r"), seq_len=32, batch_size=8,
                      val_points=2, val_examples=16, progress=False)
    shards = str(resolve_data(cfg.data))
    plan = make_plan(cfg, 8192)
    stream = BatchStream(shards, ObjectiveConfig(seq_len=32), 0, plan)
    recorder = RunRecorder(cfg, plan, stream, shards, ObjectiveConfig(seq_len=32))
    final = {"split": "val", "step": plan.steps, "val_loss": 3.2}
    early = {"split": "val", "step": 1, "val_loss": 5.0}
    recorder.on_load_checkpoint(None, None, {"global_step": plan.steps, "scaling": {"rows": [early, final], "data_digest": 7}})
    assert recorder.final_val == final and recorder.digest() == 7 and stream.start_step == plan.steps
    recorder.on_load_checkpoint(None, None, {"global_step": 1, "scaling": {"rows": [early]}})
    assert recorder.final_val is None and stream.start_step == 1


def test_a_requeued_job_is_recorded_preempted_not_failed(tmp_path):
    """submitit's USR2 path: checkpoint() saves the position, the job is requeued, and the
    process ends in sys.exit(-1). The run must read `preempted` (a plain relaunch resumes it),
    not `failed` with 'SystemExit: -1'. Simulated in-process: a USR2 handler that does what
    submitit's does, sent while the run trains."""
    import threading

    from scaling.base.config import TrainConfig
    from scaling.sweep.launch import RESUBMIT
    from scaling.train.run import TrainingRun

    cfg = TrainConfig(params="300K", tokens=51_200, out=str(tmp_path / "r"), seq_len=32, batch_size=8,
                      val_points=2, val_examples=16, progress=False, checkpoint_every_s=1e9)
    run = TrainingRun(cfg)

    def submitit_like(signum, frame):
        run.save_checkpoint()
        raise SystemExit(-1)
    old = signal.signal(signal.SIGUSR2, submitit_like)

    def send_when_training():
        deadline = time.time() + 120
        while time.time() < deadline and not (run.trainer is not None and run.trainer.global_step >= 3):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)
    t = threading.Thread(target=send_when_training, daemon=True)
    t.start()
    try:
        with pytest.raises(SystemExit):
            run.fit()
    finally:
        signal.signal(signal.SIGUSR2, old)
        t.join(5)
    rec = json.loads((tmp_path / "r" / "run.json").read_text())
    assert rec["status"] == "preempted" and "requeued" in rec["error"], rec
    assert (tmp_path / "r" / "checkpoints" / "last.ckpt").exists()
    assert "preempted" in RESUBMIT
    # The relaunch resumes from the checkpoint and completes.
    again = TrainingRun(TrainConfig(**cfg.to_dict())).fit()
    assert again["status"] == "completed" and again["restarts"] == 1


def test_a_second_usr2_while_checkpointing_is_ignored(tmp_path):
    """Slurm delivered one step signal twice, 23 ms apart: the second ran submitit's handler
    again inside checkpoint(), which waited for the record lock the first call held, and the
    job hung until its time limit. A job runs the handler once per process. Simulated with a
    submitit-like handler (checkpoint, then sys.exit(-1)) that sends itself the duplicate."""
    import threading

    from scaling.base.config import TrainConfig
    from scaling.jobs.job import TrainJob

    cfg = TrainConfig(params="300K", tokens=51_200, out=str(tmp_path / "r"), seq_len=32, batch_size=8,
                      val_points=2, val_examples=16, progress=False, checkpoint_every_s=1e9)
    record = tmp_path / "job.json"
    job = TrainJob(cfg.to_dict(), record=str(record))
    entries = []

    def submitit_like(signum, frame):
        entries.append(signum)
        if len(entries) > 1:
            return  # the regression: a nested entry (calling checkpoint() here would hang)
        os.kill(os.getpid(), signal.SIGUSR2)  # the duplicate, while this one is handled
        time.sleep(0.2)                       # its Python handler runs at the next bytecode
        job.checkpoint()
        raise SystemExit(-1)
    old = signal.signal(signal.SIGUSR2, submitit_like)

    def send_when_training():
        deadline = time.time() + 120
        while time.time() < deadline and not (job._run is not None and job._run.trainer is not None
                                               and job._run.trainer.global_step >= 3):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)
    t = threading.Thread(target=send_when_training, daemon=True)
    t.start()
    try:
        with pytest.raises(SystemExit):
            job()
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # the caller's handler is back
    finally:
        signal.signal(signal.SIGUSR2, old)
        t.join(5)
    assert entries == [signal.SIGUSR2]
    assert json.loads(record.read_text())["checkpointed"] == 1
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "preempted"


def test_checkpoint_signal_is_blocked_in_every_thread_a_job_starts(tmp_path, monkeypatch):
    """USR2 held back on the main thread only let another thread take it, and the main thread
    then ran the handler mid-step. A sweep job blocks it before any thread starts: the job's
    report thread (and torch's) inherit the mask; the caller's mask is restored afterwards."""
    import threading

    from scaling.base.config import TrainConfig
    from scaling.sweep import jobs

    seen = []

    def report(self, stop):
        seen.append(signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    monkeypatch.setattr(jobs.TrainJob, "_report", report)
    cfg = TrainConfig(params="300K", tokens=8_192, out=str(tmp_path / "r"), seq_len=32, batch_size=8,
                      val_points=2, val_examples=16, progress=False)
    assert signal.SIGUSR2 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    rec = jobs.TrainJob(cfg.to_dict(), record=str(tmp_path / "job.json"))()
    assert rec["status"] == "completed"
    assert seen == [True]                     # the thread started by the job could not take USR2
    assert signal.SIGUSR2 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])   # given back
    # A thread started during an in-process run inherits the block too.
    from scaling.base.signals import hold_checkpoint_signal, release_checkpoint_signal
    held = hold_checkpoint_signal()
    out = []
    t = threading.Thread(target=lambda: out.append(signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    t.start()
    t.join()
    release_checkpoint_signal(held)
    assert out == [True] and signal.SIGUSR2 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
