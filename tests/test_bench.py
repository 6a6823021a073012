"""The benchmarks still run: each is a script nobody imports, so an API change can break one
unnoticed (bench_train read the module's metrics rows after they moved to a callback). Tiny
settings; the figures themselves are the benchmarks' business, not a test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_runs_and_reports_its_figures(tmp_path):
    from sweep_files import tiny_shards

    shards = tiny_shards(tmp_path / "shards")
    out = tmp_path / "train.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train.py"), "--sizes", "100K", "--steps", "8",
                        "--seq-len", "32", "--batch-size", "4", "--data", str(shards), "--json", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads(out.read_text())["results"]
    assert row["size"] == "100K" and row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1.5, row
    assert "| 100K |" in r.stdout


def test_bench_olmo_ladder_runs_on_the_trimmed_copy():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "olmo_ladder.py"), "--ladder",
                        str(ROOT / "tests" / "data" / "olmo-ladder"), "--tasks", "hellaswag_val", "--bootstrap", "5"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| hellaswag_val | 1B-10xC | 0.7598 | 0.7672" in r.stdout and "mean |error|" in r.stdout
