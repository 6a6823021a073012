"""`scaling tune`: real Optuna studies of tiny real runs on the byte corpus, as submitit jobs.

In-process (debug executor): best.json agrees with the journal, reruns resume instead of
retraining, a bad trial is pruned early, bad inputs fail with one line and exit 2.
Local executor (subprocess jobs): two sizes at once, the tuned lr beats a bad one on the
same budget, tuned.json's fit and a sweep file's `lr = { tuned = DIR }`, and a trial killed
with SIGKILL is marked failed while the study goes on.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch

from scaling.cli import main
from scaling.tuning.study import storage
from sweep_files import write_sweep_file

torch.set_num_threads(2)

# Tiny runs (~2-3 s each on 2 cores): enough for the loss to depend on the lr.
ARGS = ["--tokens", "30K", "--seq-len", "32", "--batch-size", "8", "--val-points", "3"]


@pytest.fixture
def tmp_path():
    """Private, not pytest's (see test_sweep_launch.py): local jobs may still write here."""
    d = Path(tempfile.mkdtemp(prefix="scaling-tune-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _tune(shards: Path, out: Path, *extra: str) -> int:
    return main(["tune", *ARGS, "--corpus", str(shards), "--out", str(out), *extra])


def _trials(out: Path, size: str = "300K") -> list:
    return optuna.load_study(study_name=f"lr-{size}", storage=storage(out)).get_trials()


@pytest.fixture(scope="module")
def study(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "t"
    assert _tune(shards, out, "--params", "300K", "--trials", "3", "--executor", "debug", "--pruner", "none") == 0
    return out


def test_best_is_the_minimum_of_the_completed_trials(study):
    best = json.loads((study / "300K" / "best.json").read_text())
    trials = _trials(study)
    assert len(trials) == best["n_trials"] == 3
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3, [t.state for t in trials]
    assert best["loss"] == min(t.value for t in done)
    assert best["lr"] in [t.params["lr"] for t in trials]
    assert all(1e-4 <= t.params["lr"] <= 3e-2 for t in trials)
    assert len({t.params["lr"] for t in trials}) == 3
    # each trial is a real run at its own lr, and its loss is the run's final mixed val loss
    for t in done:
        rec = json.loads((study / "300K" / "trials" / str(t.number) / "run.json").read_text())
        assert rec["status"] == "completed" and rec["lr"] == pytest.approx(t.params["lr"])
        assert rec["val"]["mixed"]["loss"] == pytest.approx(t.value)
    # trial 0 is the rule-of-N lr, for a like-for-like comparison
    assert trials[0].params["lr"] == pytest.approx(best["lr_rule"])
    assert best["params"] == "300K" and 0 < best["lr_rule"] < 1
    doc = json.loads((study / "tuned.json").read_text())
    assert [s["key"] for s in doc["sizes"]] == ["300K"] and doc["fits"] == {}  # one size: no rule to fit


def test_rerun_resumes_and_only_adds_missing_trials(study, shards, capsys):
    before = {t.number: t.value for t in _trials(study)}
    mtimes = {p: p.stat().st_mtime_ns for p in (study / "300K" / "trials").glob("*/run.json")}
    capsys.readouterr()
    assert _tune(shards, study, "--params", "300K", "--trials", "3", "--executor", "debug", "--pruner", "none") == 0
    out = capsys.readouterr()
    assert {t.number: t.value for t in _trials(study)} == before
    assert {p: p.stat().st_mtime_ns for p in (study / "300K" / "trials").glob("*/run.json")} == mtimes
    assert "nothing to do" in out.err and "best lr" in out.out
    assert _tune(shards, study, "--params", "300K", "--trials", "5", "--executor", "debug", "--pruner", "none") == 0
    out = capsys.readouterr()
    after = _trials(study)
    assert len(after) == 5 and {t.number: t.value for t in after if t.number in before} == before
    assert sum(" trial " in ln and "loss" in ln for ln in out.err.splitlines()) == 2  # one line per new trial
    assert json.loads((study / "300K" / "best.json").read_text())["n_trials"] == 5


def test_changed_settings_are_refused(study, shards, capsys):
    assert main(["tune", *ARGS[:-1], "4", "--corpus", str(shards), "--params", "300K", "--out", str(study),
                 "--executor", "debug", "--pruner", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "different settings" in err and "val_points" in err and "\n" not in err


def test_a_second_tune_on_the_same_dir_is_refused(study, shards, capsys):
    with open(study / ".tune.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert _tune(shards, study, "--params", "300K", "--trials", "9", "--executor", "debug", "--pruner", "none") == 2
    assert "another `scaling tune`" in capsys.readouterr().err
    assert len(_trials(study)) == 5


def test_median_pruner_stops_a_bad_trial_at_its_first_point(shards, tmp_path, capsys):
    out = tmp_path / "m"
    assert _tune(shards, out, "--params", "300K", "--trials", "3", "--executor", "debug") == 0
    optuna.load_study(study_name="lr-300K", storage=storage(out)).enqueue_trial({"lr": 1.5e-4})  # far too small
    capsys.readouterr()
    assert _tune(shards, out, "--params", "300K", "--trials", "4", "--executor", "debug") == 0
    t = _trials(out)[3]
    assert t.params["lr"] == 1.5e-4 and t.state == optuna.trial.TrialState.PRUNED
    assert t.user_attrs["outcome"] == "pruned"
    rec = json.loads((out / "300K" / "trials" / "3" / "run.json").read_text())
    # stopped at its first validation point (step 29 of 117): pruned, not failed
    assert rec["status"] == "pruned" and rec["tokens_seen"] == 29 * 256 < rec["tokens_budget"]
    assert list(t.intermediate_values) == [1]
    capsys.readouterr()
    assert main(["tune", "status", str(out)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("300K"))
    assert line.split()[3:8] == ["3", "0", "0", "1", "0"]  # done, running, pending, pruned, failed


@pytest.mark.parametrize("extra, words", [
    (["--params", "300K", "--lr-min", "1e-2", "--lr-max", "1e-3"], "--lr-min"),
    (["--params", "300K", "--lr-min", "1e-3", "--lr-max", "1e-3"], "--lr-min"),
    (["--params", "300K", "--lr-min", "-1", "--lr-max", "1e-3"], "--lr-min"),
    (["--params", "300K", "--trials", "0"], "--trials"),
    (["--params", "3Q"], "size"),
    (["--params", "300K", "--tokens", "lots"], "--tokens"),
    (["--params", "300K", "--batch-range", "64:8"], "--batch-range"),
    (["--params", "300K", "--batch-range", "0:8"], "--batch-range"),
    (["--params", "300K", "--batch-range", "8-64"], "--batch-range"),
    (["--params", "300K", "--beta2-range", "0.999:0.9"], "--beta2-range"),
    (["--params", "300K", "--beta2-range", "0.9:1.0"], "--beta2-range"),
    (["--params", "300K", "--pruner", "mean"], "--pruner"),
    (["--params", "300K", "--executor", "cloud"], "--executor"),
    (["--params", "300K", "--sizes", "1M,2M"], "exactly one of"),
    (["--sizes", "300K,300K"], "twice"),
    (["--params", "300K", "--tokens-per-param", "20"], "not both"),
    (["--params", "300K", "--seq-len", "8"], "--seq-len"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, shards, capsys, extra, words):
    out = tmp_path / "t"
    assert _tune(shards, out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "\n" not in err, err
    assert not out.exists()


def test_status_of_a_missing_study_is_one_line(tmp_path, capsys):
    assert main(["tune", "status", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no tuning study" in err and "\n" not in err


# ------------------------------------------------------------ local executor
@pytest.fixture(scope="module")
def two_sizes(shards):
    d = Path(tempfile.mkdtemp(prefix="scaling-tune-two-"))
    out = d / "two"
    assert _tune(shards, out, "--sizes", "100K,300K", "--trials", "3", "--jobs", "2", "--executor", "local",
                 "--pruner", "none", "--plots", str(d / "plots")) == 0
    yield out
    shutil.rmtree(d, ignore_errors=True)


def test_two_sizes_as_local_jobs_and_their_rule(two_sizes, capsys):
    led = json.loads((two_sizes / "tune.json").read_text())
    assert len(led["slots"]) == 6 and {s["job"]["executor"] for s in led["slots"]} == {"local"}
    assert len({s["job"]["job_id"] for s in led["slots"]}) == 6  # one process per trial
    for size in ("100K", "300K"):
        trials = _trials(two_sizes, size)
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3
        rec = json.loads((two_sizes / size / "jobs" / "0.json").read_text())
        assert rec["executor"] == "local" and rec["trial"] in range(3) and rec["pid"] != os.getpid()
    doc = json.loads((two_sizes / "tuned.json").read_text())
    a, b = doc["sizes"]
    fit = doc["fits"]["lr"]
    assert fit["x"] == "n_params_nonembed" and fit["range"] == [a["n_params_nonembed"], b["n_params_nonembed"]]
    # two sizes: the fit passes through both best values
    for s in (a, b):
        assert fit["coef"] * s["n_params_nonembed"] ** fit["exp"] == pytest.approx(s["best"]["lr"], rel=1e-6)
    assert fit["exp_ci"][0] <= fit["exp"] <= fit["exp_ci"][1]
    assert (two_sizes.parent / "plots" / "tune_lr.html").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["tune", "status", str(two_sizes)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("2 studies: 6 completed, 0 running, 0 pending, 0 pruned, 0 failed")
    line = next(ln for ln in out.splitlines() if ln.startswith("300K"))
    assert f"{b['best']['loss']:.4f}" in line


def test_the_tuned_lr_beats_a_bad_lr_on_the_same_budget(two_sizes, shards, tmp_path):
    from scaling.base.config import TrainConfig
    from scaling.train.run import TrainingRun

    best = json.loads((two_sizes / "300K" / "best.json").read_text())
    bad = TrainingRun(TrainConfig(params="300K", tokens=30_000, data=str(shards), seq_len=32, batch_size=8,
                                  val_points=3, lr=1e-5, out=str(tmp_path / "bad"), progress=False)).fit()
    assert bad["tokens_seen"] == best["tokens"] // 256 * 256
    assert best["loss"] < bad["val"]["mixed"]["loss"] - 0.3, (best, bad["val"])


def test_a_sweep_file_reads_the_tuned_lr(two_sizes, shards, tmp_path, capsys):
    from scaling.sweep.spec import load_sweep

    doc = json.loads((two_sizes / "tuned.json").read_text())
    f = tmp_path / "s.toml"

    def write(sizes: str, lr: str) -> Path:
        return write_sweep_file(f, shards, name="s", kind="grid", train=f"lr = {lr}",
                                body=f'[grid]\nsizes = [{sizes}]\ntokens = ["30K"]')

    sw = load_sweep(write('"100K", "200K", "300K"', f'{{ tuned = "{two_sizes}" }}'))
    small, mid, big = sw.runs
    assert small.config.lr == doc["sizes"][0]["best"]["lr"] and big.config.lr == doc["sizes"][1]["best"]["lr"]
    fit = doc["fits"]["lr"]
    assert mid.config.lr == pytest.approx(fit["coef"] * mid.n_params_nonembed ** fit["exp"])
    assert dict(mid.sources)["lr"].startswith("tuned rule") and dict(small.sources)["lr"].startswith("tuned 100K")
    assert main(["sweep", "plan", str(f)]) == 0
    assert "(tuned 300K (trial" in capsys.readouterr().out
    # beyond the tuned sizes: refused, with the rule to write out to extrapolate on purpose
    assert main(["sweep", "plan", str(write('"1M"', f'{{ tuned = "{two_sizes}" }}'))]) == 2
    err = capsys.readouterr().err.strip()
    assert "outside" in err and 'rule = "power"' in err and str(f) in err and "\n" not in err
    sw = load_sweep(write('"1M"', f'{{ rule = "power", coef = {fit["coef"]}, exp = {fit["exp"]} }}'))
    assert sw.runs[0].config.lr == pytest.approx(fit["coef"] * sw.runs[0].n_params_nonembed ** fit["exp"])
    for lr, words in ((f'{{ tuned = "{tmp_path / "none"}" }}', "tuned.json not found"), ('"tuned"', "needs the study"),
                      ('{ rule = "cubic", coef = 1, exp = 1 }', "must be \"power\""), ('{ coef = 1 }', "write {")):
        assert main(["sweep", "plan", str(write('"300K"', lr))]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "train.lr" in err and "\n" not in err, err


def test_a_killed_trial_is_marked_failed_and_the_study_goes_on(shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCALING_JOB_REPORT_S", "1")
    out = tmp_path / "k"
    record = out / "100K" / "jobs" / "0.json"
    killed = {}

    def kill_first_trial():
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                rec = json.loads(record.read_text())
            except (OSError, ValueError):
                rec = {}
            if rec.get("step", 0) >= 5 and rec.get("pid"):
                os.kill(rec["pid"], signal.SIGKILL)
                killed.update(rec)
                return
            time.sleep(0.2)

    threading.Thread(target=kill_first_trial, daemon=True).start()
    assert _tune(shards, out, "--params", "100K", "--tokens", "60K", "--trials", "2", "--executor", "local",
                 "--pruner", "none") == 0
    assert killed, "the first trial never reported a step"
    trials = _trials(out, "100K")
    # the killed trial failed with its job's reason, and the next trial ran
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[0].number == killed["trial"] and "died without a result" in trials[0].user_attrs["error"]
    assert json.loads((out / "100K" / "trials" / "0" / "run.json").read_text())["status"] == "running"
    capsys.readouterr()
    assert main(["tune", "status", str(out)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("100K"))
    assert line.split()[3:8] == ["1", "0", "0", "0", "1"]
    # failed trials do not count towards --trials: a rerun replaces it
    assert _tune(shards, out, "--params", "100K", "--tokens", "60K", "--trials", "2", "--executor", "local",
                 "--pruner", "none") == 0
    assert [t.state.name for t in _trials(out, "100K")] == ["FAIL", "COMPLETE", "COMPLETE"]


def test_a_job_that_asked_but_has_not_recorded_its_trial_is_counted_once(tmp_path):
    """Between a job's study.ask() and its record naming the trial, `tune status` saw the
    trial RUNNING with no job claiming it (running) and the job's record without a trial
    (pending): one job counted twice, and `scaling tune` would submit one trial too few.
    A started job (its record exists) pays for an unclaimed trial; a queued one does not."""
    from scaling.jobs.ledger import Job
    from scaling.tuning.status import Ledger, Slot, tune_status

    out = tmp_path / "t"
    out.mkdir()
    study = optuna.create_study(study_name="lr-300K", storage=storage(out))
    study.set_user_attr("size", {"key": "300K"})
    ledger = Ledger(out)
    for k in range(3):  # debug jobs: alive while a `scaling tune` holds the lock
        ledger.slots.append(Slot("300K", k, Job("debug", "-", "l", "tune-t-l", time.time())))
    ledger.save()
    (out / "300K" / "jobs").mkdir(parents=True)
    (out / "300K" / "jobs" / "0.json").write_text(json.dumps({"job_id": None, "starts": 1}))  # started, asking
    study.ask()  # slot 0's trial, not yet in its record; slots 1 and 2 wait
    with open(out / ".tune.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        (row,) = tune_status(out)
    assert (row["counts"]["running"], row["counts"]["pending"]) == (1, 2), row["counts"]
