"""The GPU check's dry run: every stage's commands run on CPU with tiny sizes and leave their
tables in the output folder (the figures themselves are a GPU's business); a stage that fails
makes the check exit non-zero; data the tiny models cannot use is refused before anything runs.

The check runs in this process (its dry run calls each entry point in-process anyway), so the
test pays torch's and Lightning's start once with the rest of the suite."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_dry_run_writes_every_table(tmp_path, shards, gpu_check):
    out = tmp_path / "gpu"
    assert gpu_check.main(["--out", str(out), "--dry-run", "--data", str(shards)]) == 0
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
    assert "C3e8-N13K" in iso and "C1e9-N30K" in iso and "Approach 3: L(N, D) = E + A/N^alpha + B/D^beta   (9 runs" in iso
    assert (out / "sweep" / "results.parquet").exists()


def test_a_failed_stage_fails_the_check(tmp_path, shards, gpu_check, capsys):
    # A budget no 13K model can be trained at: the sweep's plan refuses it, the stage fails.
    out = tmp_path / "gpu"
    assert gpu_check.main(["--out", str(out), "--dry-run", "--data", str(shards), "--stages", "isoflop",
                           "--budgets", "1e3"]) == 1
    assert "[gpu_check] failed: isoflop" in capsys.readouterr().err
    assert "plan exit 2" in (out / "isoflop.md").read_text() and (out / "summary.md").exists()


def test_data_the_tiny_models_cannot_use_is_refused(tmp_path, gpu_check, capsys):
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    (bpe / "meta.json").write_text(json.dumps({"vocab_size": 8192}))
    assert gpu_check.main(["--out", str(tmp_path / "gpu"), "--dry-run", "--data", str(bpe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a vocabulary of 8,192; the dry run's tiny models need byte-level" in err
    assert not (tmp_path / "gpu").exists()
    assert gpu_check.main(["--out", str(tmp_path / "gpu"), "--dry-run", "--stages", "mfu,speed"]) == 2
    assert "--stages: no stage speed" in capsys.readouterr().err
