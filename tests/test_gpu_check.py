"""The GPU check's dry run: every stage's commands run on CPU with tiny sizes and leave their
tables in the output folder (the figures themselves are a GPU's business)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_table(tmp_path, shards):
    out = tmp_path / "gpu"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(out), "--dry-run",
                        "--data", str(shards)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for stage in ("mfu", "strategies", "isoflop"):
        assert f"## {stage}" in summary and (out / f"{stage}.md").exists()
    # MFU: bench_train's row for the tiny size, with its figures.
    mfu = (out / "mfu.md").read_text()
    assert "| 100K |" in mfu and ", exit" not in mfu
    # Strategies: the plain run trained; DDP and FSDP either trained or say why not.
    rows = {line.split("|")[1].strip(): line for line in (out / "strategies.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| strategy")}
    assert "1.000x" in rows["plain"] and "exit" not in rows["plain"]
    for name in ("ddp", "fsdp"):
        assert "exit" not in rows[name] and ("x |" in rows[name] or "has no --strategy" in rows[name])
    # IsoFLOP: planned, launched, collected (9 runs) and fitted: a law from the tiny sweep.
    iso = (out / "isoflop.md").read_text()
    assert "plan exit 0, launch exit 0, collect exit 0, fit exit 0" in iso
    assert "C1e9-N13K" in iso and "C3e9-N30K" in iso and "Approach 3: L(N, D) = E + A/N^alpha + B/D^beta   (9 runs" in iso
    assert (out / "sweep" / "results.parquet").exists()
