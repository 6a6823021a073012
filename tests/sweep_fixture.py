"""A small sweep on disk, as `scaling sweep collect` writes it (results.parquet with run names,
budgets, statuses and validation noise; curves.parquet with each run's validation points),
drawn from a known law with noise: the figures, the report and the notebooks read it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from scaling.fit.law import optimal_nd, predict_loss

LAW = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.30}
BUDGETS = (1e17, 1e18, 1e19, 1e20)


def write_sweep(out: Path, seed: int = 0, sizes_per_budget: int = 7, noise: float = 0.003) -> Path:
    """DIR/results.parquet and DIR/curves.parquet of an IsoFLOP sweep; returns DIR."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    runs, curves = [], []
    for c in BUDGETS:
        n0, _ = optimal_nd(LAW, c)
        for f in np.geomspace(1 / 8, 8, sizes_per_budget):
            n = float(n0 * f)
            d = c / (6 * n)
            name = f"C{c:.0e}-N{n:.3g}".replace("+", "")
            loss = float(predict_loss(LAW, n, d)) * float(np.exp(noise * rng.standard_normal()))
            runs.append({"run": name, "params": n, "params_nonembed": 0.9 * n, "tokens": d, "flops": 6 * n * d,
                         "budget": c, "loss": loss, "loss_se": 0.004, "status": "completed"})
            for t in np.geomspace(d / 30, d, 8):
                curves.append({"run": name, "params": n, "tokens": float(t), "flops": 6 * n * float(t),
                               "loss": float(predict_loss(LAW, n, t)) * float(np.exp(noise * rng.standard_normal()))})
    # One run that failed: the report lists it, the fits leave it out.
    runs.append({"run": "C1e20-failed", "params": 1e9, "params_nonembed": 9e8, "tokens": None, "flops": None,
                 "budget": 1e20, "loss": None, "loss_se": None, "status": "failed"})
    pl.DataFrame(runs).write_parquet(out / "results.parquet")
    pl.DataFrame(curves).write_parquet(out / "curves.parquet")
    return out
