"""`scaling tune`: a real Optuna study of tiny runs; best.json agrees with the journal,
reruns resume instead of retraining, bad inputs fail with one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from scaling.cli import main

torch.set_num_threads(2)

# Tiny runs (~3 s each on 2 cores): enough for the loss to depend on the lr.
ARGS = ["--params", "300K", "--tokens", "30K", "--seq-len", "32", "--batch-size", "8",
        "--val-points", "3", "--no-progress"]


def _tune(out: Path, *extra: str) -> int:
    return main(["tune", *ARGS, "--out", str(out), *extra])


def _trials(out: Path) -> list:
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "300K"
    assert _tune(out, "--trials", "3") == 0
    return out


def test_best_is_the_minimum_of_the_completed_trials(study):
    best = json.loads((study / "best.json").read_text())
    trials = _trials(study)
    assert len(trials) == best["n_trials"] == 3
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done, [t.state for t in trials]
    assert best["loss"] == min(t.value for t in done)
    assert best["lr"] in [t.params["lr"] for t in trials]
    assert all(1e-4 <= t.params["lr"] <= 3e-2 for t in trials)
    assert len({t.params["lr"] for t in trials}) == 3
    # each trial is a real run at its own lr, and its loss is the run's final mixed val loss
    for t in done:
        rec = json.loads((study / "trials" / str(t.number) / "run.json").read_text())
        assert rec["status"] == "completed" and rec["lr"] == pytest.approx(t.params["lr"])
        assert rec["val"]["mixed"]["loss"] == pytest.approx(t.value)
    # trial 0 is the rule-of-N lr, for a like-for-like comparison
    assert trials[0].params["lr"] == pytest.approx(best["lr_rule"])
    assert best["params"] == "300K" and 0 < best["lr_rule"] < 1


def test_rerun_resumes_and_only_adds_missing_trials(study, capsys):
    before = {t.number: t.value for t in _trials(study)}
    mtimes = {p: p.stat().st_mtime_ns for p in (study / "trials").glob("*/run.json")}
    capsys.readouterr()
    assert _tune(study, "--trials", "3") == 0
    out = capsys.readouterr()
    assert {t.number: t.value for t in _trials(study)} == before
    assert {p: p.stat().st_mtime_ns for p in (study / "trials").glob("*/run.json")} == mtimes
    assert "nothing to do" in out.err and "best lr" in out.out
    assert _tune(study, "--trials", "5") == 0
    out = capsys.readouterr()
    after = _trials(study)
    assert len(after) == 5 and {t.number: t.value for t in after if t.number in before} == before
    assert out.err.count("\ntrial ") + out.err.startswith("trial ") == 2  # one line per finished trial
    assert json.loads((study / "best.json").read_text())["n_trials"] == 5


def test_changed_settings_are_refused(study, capsys):
    assert main(["tune", *ARGS[:-3], "--val-points", "4", "--out", str(study)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "different settings" in err and "\n" not in err


@pytest.mark.parametrize("extra, words", [
    (["--lr-min", "1e-2", "--lr-max", "1e-3"], "--lr-min"),
    (["--lr-min", "1e-3", "--lr-max", "1e-3"], "--lr-min"),
    (["--trials", "0"], "--trials"),
    (["--params", "3Q"], "--params"),
    (["--tokens", "lots"], "--tokens"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, words):
    out = tmp_path / "t"
    assert main(["tune", *ARGS, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "\n" not in err
    assert not out.exists()
