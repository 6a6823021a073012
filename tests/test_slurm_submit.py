"""What `sweep launch` hands sbatch, on the real Slurm cluster (slurm/start.sh): a refused
partition is one line, exit 2, nothing written; small and large runs of one sweep get
different resources (read back from the scripts submitted); `--runs` launches a subset;
each array task is named `<sweep>/<run>` and run.json records `<array>_<task>`.
Skipped with the reason where no cluster is up; with CI set they fail instead."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from scaling.cli import main
from scaling.sweep.launch import wait_for
from scaling.sweep.status import sweep_states
from sweep_files import QUICK_VAL, write_sweep_file
from test_slurm import cluster, tmp_path  # noqa: F401  (fixtures: the cluster up; a private folder)

pytestmark = pytest.mark.slurm

GRID = """
    [grid]
    sizes = ["20K", "100K"]
    tokens = ["10K", "20K"]             # whole batches of 256 tokens: D9.98K, D20K
"""


def sweep_file(tmp_path, shards, name: str, executor: str, slurm: str = ""):
    f = write_sweep_file(tmp_path / f"{name}.toml", shards, name=name, kind="grid", body=GRID, train=QUICK_VAL,
                         executor='default = "slurm"\n' + executor)
    if slurm:
        f.write_text(f.read_text() + "[slurm]\n" + slurm + "\n")
    return f


def test_a_refused_partition_is_one_line_and_writes_nothing(cluster, shards, tmp_path, capsys):  # noqa: F811
    f = sweep_file(tmp_path, shards, "refused", "time_min = 10", 'partition = "no-such-partition"')
    out = tmp_path / "out"
    for dry in (["--dry-run"], []):
        capsys.readouterr()
        assert main(["sweep", "launch", str(f), "--out", str(out), *dry]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"error: {f}: slurm.partition = 'no-such-partition': sbatch refused it: ") and \
            "invalid partition" in err.lower(), err
        assert not out.exists()
    # Slurm's reason need not name the option ("Requested node configuration is not
    # available"): the one whose absence sbatch accepts is named.
    f = sweep_file(tmp_path, shards, "toomany", 'time_min = 10\ncpus_per_task = { "0" = 1, "50K" = 4096 }')
    assert main(["sweep", "launch", str(f), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "executor.cpus_per_task = 4096 (runs N100K-D9.98K, N100K-D20K): sbatch refused it" in err, err
    assert not out.exists()


def test_small_and_large_runs_get_their_own_resources_and_names(cluster, shards, tmp_path, capsys):  # noqa: F811
    """One launch of a subset (--runs): the two small runs as one array of 1 CPU and 5
    minutes, the large one as a job of 2 CPUs and 10; the fourth run is left for later."""
    f = sweep_file(tmp_path, shards, "sized", 'cpus_per_task = { "0" = 1, "50K" = 2 }\ntime = { "0" = 5, "50K" = "00:10:00" }')
    out = tmp_path / "out"
    assert main(["sweep", "launch", str(f), "--out", str(out), "--dry-run", "--runs", "N20K-*,N100K-D2*"]) == 0
    dry = capsys.readouterr().out
    assert dry.count("#!/bin/bash") == 2 and "#SBATCH --hold" in dry and "1 not in --runs" in dry, dry
    assert not out.exists()

    assert main(["sweep", "launch", str(f), "--out", str(out), "--runs", "N20K-*,N100K-D2*"]) == 0
    said = capsys.readouterr().out
    assert "3 submitted; skipped: 1 not in --runs (job arrays " in said, said
    ledger = json.loads((out / "sweep.json").read_text())["runs"]
    ids = {name: r["jobs"][-1]["job_id"] for name, r in ledger.items() if r["jobs"]}
    assert set(ids) == {"N20K-D9.98K", "N20K-D20K", "N100K-D20K"} and "N100K-D9.98K" not in ids
    small = ids["N20K-D9.98K"].split("_")[0]
    assert {ids["N20K-D9.98K"], ids["N20K-D20K"]} == {f"{small}_0", f"{small}_1"}, ids   # one array of two
    assert "_" not in ids["N100K-D20K"]                                                   # a job of its own

    # What sbatch was handed, as submitit kept it beside the logs.
    scripts = {p.name.split("_")[0]: p.read_text() for p in out.glob("launches/*/*_submission.sh")}
    assert set(scripts) == {small, ids["N100K-D20K"]}, scripts
    flags = {k: dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)", v, re.M)) for k, v in scripts.items()}
    assert (flags[small]["cpus-per-task"], flags[small]["time"], flags[small]["array"]) == ("1", "5", "0-1%2")
    big = flags[ids["N100K-D20K"]]
    assert (big["cpus-per-task"], big["time"], "array" in big) == ("2", "10", False)

    # Each task says its run in squeue and sacct (and %x); run.json records the array task.
    states = wait_for(out, names=list(ids), progress=False, poll_s=1, timeout_s=300)
    assert {s.state for s in states} == {"completed"}, [(s.name, s.state, s.error) for s in states]
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,JobName", "-j", f"{small},{ids['N100K-D20K']}"],
                          capture_output=True, text=True).stdout
    names = dict(ln.split("|", 1) for ln in acct.split())
    assert {names[ids[n]] for n in ids} == {f"sized/{n}" for n in ids}, acct
    for name, job in ids.items():
        rec = json.loads((out / "runs" / name / "run.json").read_text())
        assert rec["slurm_job_id"] == job and rec["history"][-1]["job"] == job, (name, rec["history"])
    by = {s.name: s.state for s in sweep_states(out)}
    assert by["N100K-D9.98K"] == "not launched"
