"""How long the sweep commands take at scale. Prints figures; asserts nothing.

1. Expanding and dry-run launching a 500-run sweep (25 sizes x 20 token multiples).
2. Really submitting it to the Slurm cluster on this machine (slurm/start.sh) as one job
   array, then cancelling it (skipped when sbatch is absent).
3. `status` and `collect` on 1,000 synthetic completed run directories (run.json plus a
   metrics.parquet with 8 validation points each), in-process and as CLI commands.

    .venv/bin/python bench/bench_sweep.py [--runs 1000] [--no-slurm]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from scaling.base.rundir import write_parquet_atomic

SWEEP = """
[sweep]
name = "bench500"
kind = "grid"
vocab_size = 260
[grid]
sizes = [{sizes}]
tokens_per_param = [{mults}]
[train]
data = "{data}"
seq_len = 32
batch_size = 4
[executor]
time_min = 10
"""


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scaling.cli", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def write_run_dirs(root: Path, n: int) -> None:
    """n completed runs the way the trainer writes them (run.json + metrics.parquet)."""
    runs = root / "runs"
    for i in range(n):
        d = runs / f"C1e{12 + i % 5}-N{100 + i}K"
        d.mkdir(parents=True)
        n_params = (100 + i) * 1000
        tokens = 20 * n_params
        (d / "run.json").write_text(json.dumps({
            "name": d.name, "status": "completed", "config": {"params": f"{100 + i}K", "tokens": tokens,
                                                              "extra": {"budget": 10.0 ** (12 + i % 5)}},
            "n_params": n_params, "n_params_nonembed": n_params // 2, "tokens_seen": tokens,
            "flops": 6.0 * n_params * tokens, "val": {k: {"loss": 3.0, "bpb": 1.5} for k in ("mixed", "denoise", "clm")},
            "wall_time_s": 60.0, "error": None, "device": "cpu", "restarts": 0}))
        steps = list(range(10, 170, 10))
        write_parquet_atomic(pl.DataFrame({
            "split": ["train", "val"] * 8, "step": steps, "tokens": [s * 128 for s in steps],
            "flops": [6.0 * n_params * s * 128 for s in steps], "train_loss": [4.0] * 16,
            "val_loss": [3.0 + 1.0 / s for s in steps]}), d / "metrics.parquet")


def byte_shards(out: Path) -> Path:
    """A small byte-level shard directory (real text: standard-library docstrings), so
    submitted jobs find the vocabulary the sweep states."""
    import inspect
    import json as j, os, re, textwrap  # noqa: E401

    from scaling.data.prepare import PrepareConfig, prepare

    docs = [d for m in (j, os, re, textwrap, inspect) for o in vars(m).values()
            if callable(o) and (d := inspect.getdoc(o)) and len(d) > 200]
    return prepare(docs, out, PrepareConfig(tokenizer="bytes", val_fraction=0.1), source={"paths": "stdlib"}, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000, help="synthetic run directories for status/collect")
    ap.add_argument("--no-slurm", action="store_true", help="skip the real Slurm submission")
    args = ap.parse_args()

    from scaling.sweep.collect import collect
    from scaling.sweep.launch import launch
    from scaling.sweep.spec import load_sweep
    from scaling.sweep.status import summary, sweep_states

    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        # 25 sizes 1.25x apart (100K-21M): distinct shapes, so no run is merged away
        sizes = ", ".join(f'"{float(f"{100e3 * 1.25**i:.2g}"):.0f}"' for i in range(25))
        mults = ", ".join(str(5 + 5 * i) for i in range(20))
        f = tmp / "bench500.toml"
        f.write_text(SWEEP.format(sizes=sizes, mults=mults, data=byte_shards(tmp / "shards")))
        sweep, t_load = timed(lambda: load_sweep(f))
        # A dry run checks what a launch checks: a Slurm one needs sbatch here.
        kind = "slurm" if shutil.which("sbatch") else "local"
        res, t_dry = timed(lambda: launch(sweep, kind, tmp / "out500", dry_run=True))
        print(f"500-run sweep: expand {t_load:.2f} s ({len(sweep.runs)} runs), dry-run launch ({kind}) {t_dry:.2f} s "
              f"({len(res.submitted)} to submit); CLI dry run {cli('sweep', 'launch', str(f), '--executor', kind, '--out', str(tmp / 'out500'), '--dry-run'):.2f} s")

        if not args.no_slurm and shutil.which("sbatch"):
            res, t_sub = timed(lambda: launch(sweep, "slurm", tmp / "out500", progress=False))
            array = next(iter(res.job_ids.values())).split("_")[0]
            try:
                states, t_st = timed(lambda: sweep_states(tmp / "out500"))
                print(f"500-run sweep: real submission to Slurm {t_sub:.2f} s (job array {array}, "
                      f"{len(res.job_ids)} tasks); status with squeue+sacct {t_st:.2f} s ({summary(states)})")
            finally:
                subprocess.run(["scancel", array], check=False)
        else:
            print("500-run sweep: real Slurm submission skipped (no sbatch, or --no-slurm)")

        root = tmp / "dirs"
        _, t_gen = timed(lambda: write_run_dirs(root, args.runs))
        states, t_status = timed(lambda: sweep_states(root))
        (results, curves, _), t_collect = timed(lambda: collect(root))
        assert results.height == args.runs and curves.height == 8 * args.runs
        print(f"{args.runs} run dirs (written in {t_gen:.1f} s): status {t_status:.2f} s, collect {t_collect:.2f} s "
              f"in-process; CLI (with interpreter start-up): status {cli('sweep', 'status', str(root)):.2f} s, "
              f"collect {cli('sweep', 'collect', str(root)):.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
