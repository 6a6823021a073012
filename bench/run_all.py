"""Run every benchmark in turn on this machine (`make bench`); each prints its own figures.

Benchmarks measure wall time: run them on a quiet machine, one at a time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ("training throughput (CPU, fp32)", ["bench_train.py"]),
    ("the demo's runs: FLOP/s before and after the re-sizing", ["bench_demo.py"]),
    ("threads against step size", ["bench_threads.py"]),
    ("tokenizing", ["bench_tokenize.py"]),
    ("fitting (Approach 3 grid and bootstrap)", ["bench_fit.py"]),
    ("designing the next runs on Chinchilla's points", ["bench_design.py"]),
    ("sweeps (plan, launch, status, collect)", ["bench_sweep.py"]),
    ("tuning: trials per hour, with and without pruning", ["bench_tune.py"]),
    ("downstream tasks: their share of a demo run's wall time", ["bench_tasks.py"]),
    ("WSD against cosine at equal tokens", ["bench_wsd.py"]),
    ("compute per law: a branched WSD sweep against the same points from scratch", ["bench_branches.py"]),
]


def main() -> int:
    failed = []
    for title, argv in BENCHES:
        print(f"\n=== {title}: python bench/{' '.join(argv)}", flush=True)
        t = time.time()
        rc = subprocess.call([sys.executable, str(HERE / argv[0]), *argv[1:]])
        print(f"=== {title}: exit {rc}, {time.time() - t:.0f} s", flush=True)
        if rc:
            failed.append(title)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
