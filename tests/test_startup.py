"""`scaling sweep plan`, `fit` and `plan` start without torch or Lightning: the shapes, the
size rule and the FLOP counts are torch-free (scaling/shapes.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys
from scaling.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:      # --help
    rc = e.code
heavy = sorted(m for m in ("torch", "lightning") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
raise SystemExit(rc)
"""


@pytest.mark.parametrize("argv", [
    ["sweep", "plan", "sweeps/demo-cpu.toml"],
    ["sweep", "plan", "sweeps/isoflop-gpu.toml"],
    ["plan", "--params", "20B", "--tokens", "1T"],
    ["plan", "--compute", "1e22", "--compare"],
    ["fit", "{results}", "--bootstrap", "20", "--rollout"],
])
def test_planning_commands_do_not_import_torch(argv, tmp_path):
    import numpy as np
    import polars as pl
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(1e6, 1e8, 6), 4)
    d = n * np.tile([5.0, 20, 80, 320], 6)
    loss = (1.7 + 400 / n ** 0.34 + 1200 / d ** 0.3) * np.exp(0.002 * rng.standard_normal(n.size))
    results = tmp_path / "r.csv"
    pl.DataFrame({"params": n, "tokens": d, "loss": loss}).write_csv(results)
    argv = [a.format(results=results) for a in argv]
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "HEAVY:", r.stdout[-500:]


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`scaling ... | head`: the pipe closes before the command writes; it stops without a
    traceback, with SIGPIPE's conventional status."""
    p = subprocess.Popen([sys.executable, "-m", "scaling.cli", "sweep", "plan", "sweeps/demo-cpu.toml"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_only_a_closed_stdout_counts_as_the_reader_gone(monkeypatch):
    """Another broken pipe (a worker's, stderr's) must still fail loudly: the quiet exit is for
    stdout's reader only."""
    import os

    from scaling.cli import _stdout_reader_gone

    r, w = os.pipe()
    with os.fdopen(w, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        assert not _stdout_reader_gone()      # a reader is there
        os.close(r)
        assert _stdout_reader_gone()          # it went away
        monkeypatch.undo()


def test_a_job_unpickles_without_numpy_or_torch():
    """submitit unpickles a job before the job blocks USR2 (scaling/base/signals.py): the
    modules that loads must start no threads (numpy's BLAS, torch's), or USR2 could land on
    one of them and checkpoint in the middle of a step."""
    probe = """
import sys, threading
from submitit.helpers import DelayedSubmission
for name in ("train_job", "trial_job"):
    DelayedSubmission.load(f"tests/data/jobs-0.1/{name}.pkl")
heavy = sorted(m for m in ("numpy", "torch", "lightning") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), "THREADS:" + str(threading.active_count()))
"""
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["HEAVY:", "THREADS:1"], r.stdout
