"""`launch --dry-run` refuses what `launch` refuses, and a missing data directory is named as
missing, before anything is written."""

from __future__ import annotations

import shutil

import pytest

from scaling.cli import main
from sweep_files import QUICK_VAL, write_sweep_file

BODY = """
    [isoflop]
    budgets = [3e9]
    sizes = ["100K"]
"""


def test_missing_data_is_named_as_missing(tmp_path, capsys):
    f = write_sweep_file(tmp_path / "s.toml", tmp_path / "no-such-shards", name="s", kind="isoflop",
                         body=BODY, train=QUICK_VAL)
    # Without a stated vocabulary the models cannot be sized: plan says why, not "budget too small".
    f.write_text(f.read_text().replace("vocab_size = 260\n", ""))
    assert main(["sweep", "plan", str(f)]) == 2
    err = capsys.readouterr().err
    assert "no-such-shards': no such file or directory" in err and "budget too small" not in err, err
    # With one, plan works (a laptop plans a cluster's sweep); launch, dry or not, refuses.
    f.write_text(f.read_text().replace('kind = "isoflop"\n', 'kind = "isoflop"\nvocab_size = 260\n'))
    assert main(["sweep", "plan", str(f)]) == 0
    out = tmp_path / "out"
    for dry in (["--dry-run"], []):
        capsys.readouterr()
        assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out), *dry]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "train.data = " in err and "no such file or directory" in err, err
        assert not out.exists()


def test_dry_run_checks_the_vocabulary_and_the_executor(tmp_path, shards, capsys):
    f = write_sweep_file(tmp_path / "s.toml", shards, name="s", kind="isoflop", body=BODY, train=QUICK_VAL)
    out = tmp_path / "out"
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out), "--dry-run"]) == 0
    assert "1 to submit" in capsys.readouterr().out
    if shutil.which("sbatch") is None:
        assert main(["sweep", "launch", str(f), "--executor", "slurm", "--out", str(out), "--dry-run"]) == 2
        assert "sbatch not found" in capsys.readouterr().err
    # A stated vocabulary the data does not have: plan refuses it where the data is here, and
    # so does the dry run (the check launch makes before it submits).
    f.write_text(f.read_text().replace("vocab_size = 260", "vocab_size = 300"))
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out), "--dry-run"]) == 2
    assert "vocabulary of 260" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", ["status", "collect", "cancel", "logs"])
def test_status_collect_cancel_and_logs_start_without_the_launch_path(tmp_path, command):
    """Each `sweep` sub-command imports its own modules: reading run records loads neither
    submitit nor the shard reader (nor torch)."""
    import json
    import subprocess
    import sys

    run = tmp_path / "sw" / "runs" / "r"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "running", "config": {"tokens": 1000}}))
    if command == "cancel":
        (tmp_path / "sw" / "sweep.json").write_text(json.dumps({"sweep": "sw", "kind": "grid", "runs": {}}))
    args = [str(tmp_path / "sw")]
    if command == "logs":   # a run whose one local job left its log
        job = {"executor": "local", "job_id": "1", "launch": "L", "name": "sw-L", "submitted_at": 0.0}
        entry = {"name": "r", "config": {}, "n_params": 1, "n_params_nonembed": 1, "flops_per_token": 6.0,
                 "budget": None, "jobs": [job]}
        (tmp_path / "sw" / "sweep.json").write_text(json.dumps({"sweep": "sw", "kind": "grid", "runs": {"r": entry}}))
        (tmp_path / "sw" / "launches" / "L").mkdir(parents=True)
        (tmp_path / "sw" / "launches" / "L" / "1_0_log.out").write_text("hello\n")
        args.append("r")
    probe = ("import sys\nfrom scaling.cli import main\nrc = main(sys.argv[1:])\n"
             "print('LOADED:' + ','.join(m for m in ('submitit', 'scaling.data.shards', 'torch') if m in sys.modules))\n"
             "raise SystemExit(rc)")
    r = subprocess.run([sys.executable, "-c", probe, "sweep", command, *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "LOADED:", r.stdout
