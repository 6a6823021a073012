"""The two-step task law on the OLMo ladder (docs/task-laws.md): the paper's step-1 and step-2
fits on all 16 runs, and the rollout, fitted on the three smaller sizes (190M-760M) and
predicting the 1B ("1.3B") runs' task loss and accuracy. Prints markdown tables; asserts nothing.

    .venv/bin/python bench/olmo_ladder.py [--ladder ../shared/data/olmo-ladder] [--bootstrap 200]

The paper's own code (allenai/OLMo-ladder, src/fitting/step1.py and step2.py) run on the same
rows gives the numbers docs/task-laws.md sets beside these.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import polars as pl

import scaling
from scaling.fit import FitWarning
from scaling.fit.olmo import read_ladder
from scaling.fit.tasklaw import Step2Options

LADDER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "olmo-ladder"
# The paper's eight tasks (`v2_main` in its code) and their chance accuracy.
TASKS = {"mmlu_avg_test": 0.25, "hellaswag_val": 0.25, "arc_challenge_test": 0.25, "arc_easy_test": 0.25,
         "piqa_val": 0.5, "csqa_val": 0.2, "socialiqa_val": 1 / 3, "openbookqa_test": 0.25}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ladder", default=str(LADDER))
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--tasks", default=",".join(TASKS))
    a = ap.parse_args()
    fits, rolls = [], []
    results = read_ladder(a.ladder)[0]       # the observed accuracy of the runs predicted
    for t in a.tasks.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            f = scaling.fit(a.ladder, target=f"task.{t}.bpb", n_boot=a.bootstrap, approaches=(3,),
                            holdout_budget=False, step2=Step2Options(chance=TASKS.get(t)))
            small = f.where(pl.col("params") < 1e9)
        s1, s2 = f.task["step1"], f.task["step2"]
        fits.append(f"| {t} | {s1['A']:.4g} | {s1['alpha']:.4f} | {s1['B']:.4g} | {s1['beta']:.4f} | {s1['E']:.4f} | "
                    + (f"{s2['a']:.4f} | {s2['L0']:.4f} | {s2['k']:.4f} | {s2['b']:.4f} |" if "a" in s2 else
                       f"refused: {s2['refused']} | | | |"))
        big = f.runs.filter(pl.col("params") > 1e9).sort("tokens")
        pred = small.predict_task(big["params"].to_numpy(), big["tokens"].to_numpy())
        acc = results.filter(pl.col("run").is_in(big["run"].to_list())).sort("tokens")
        for run, l_obs, acc_obs, p in zip(big["run"], big["loss"], acc[f"task.{t}.acc"], pred.iter_rows(named=True)):
            rolls.append((t, run, l_obs, p, acc_obs))
    print("Step 1 and step 2 on all 16 runs (this lab):\n")
    print("| task | A | alpha | B | beta | E | a | L0 | k | b |\n|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(fits))
    print("\nRollout: fitted on 190M-760M (12 runs), predicting the 1B runs (95% interval, joint bootstrap):\n")
    print("| task | run | task loss | predicted | error | accuracy | predicted | error (points) |\n"
          "|---|---|---|---|---|---|---|---|")
    errs = []
    for t, run, l_obs, p, acc_obs in rolls:
        e_l = p["task_loss"] / l_obs - 1
        e_a = None if p["accuracy"] is None else 100 * (p["accuracy"] - acc_obs)
        errs.append((abs(e_l), abs(e_a) if e_a is not None else np.nan))
        print(f"| {t} | {run} | {l_obs:.4f} | {p['task_loss']:.4f} [{p['task_loss_lower']:.3f}, "
              f"{p['task_loss_upper']:.3f}] | {100 * e_l:+.1f}% | {acc_obs:.3f} | "
              + (f"{p['accuracy']:.3f} [{p['accuracy_lower']:.3f}, {p['accuracy_upper']:.3f}] | {e_a:+.1f} |"
                 if e_a is not None else "- | - |"))
    e = np.array(errs)
    print(f"\nmean |error|: task loss {100 * np.nanmean(e[:, 0]):.1f}%, accuracy {np.nanmean(e[:, 1]):.1f} points")


if __name__ == "__main__":
    main()
