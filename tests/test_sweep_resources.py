"""Resources per run (keys by size), time limits, sbatch options by name, `--runs`, and paths
in a sweep file read from the file's folder. No cluster needed: the Slurm side of each is in
tests/test_slurm_submit.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scaling.base.errors import UserError
from scaling.cli import main
from scaling.jobs import sbatch
from scaling.sweep.launch import chosen
from scaling.sweep.resources import minutes
from scaling.sweep.spec import load_sweep
from sweep_files import QUICK_VAL, write_sweep_file

GRID = """
    [grid]
    sizes = ["20K", "100K"]
    tokens = ["20K"]
"""


def sweep_with(tmp_path, shards, executor: str, slurm: str = "", name: str = "res"):
    f = write_sweep_file(tmp_path / f"{name}.toml", shards, name=name, kind="grid", body=GRID, train=QUICK_VAL,
                         executor=executor)
    if slurm:
        f.write_text(f.read_text() + "[slurm]\n" + slurm + "\n")
    return f


def test_keys_by_size_give_small_and_large_runs_their_own(tmp_path, shards):
    f = sweep_with(tmp_path, shards, 'cpus_per_task = { "0" = 1, "50K" = 2 }\n'
                                     'time = { "0" = 5, "50K" = "01:30:00" }\nmem_gb = 2',
                   'partition = { "0" = "small", "50K" = "big" }\ngres = "gpu:0"')
    sw = load_sweep(f)
    small, large = sw.run("N20K-D20K"), sw.run("N100K-D20K")
    assert (sw.resources_of(small).cpus_per_task, sw.resources_of(small).time_min) == (1, 5)
    assert (sw.resources_of(large).cpus_per_task, sw.resources_of(large).time_min) == (2, 90)
    assert sw.resources_of(large).mem_gb == 2 == sw.resources_of(small).mem_gb     # plain keys: every run
    assert (sw.slurm_of(small).partition, sw.slurm_of(large).partition) == ("small", "big")
    assert sw.slurm_of(large).options == {"gres": "gpu:0"}
    # The sweep's own settings take each table's smallest entry (tune --sweep reads them).
    assert (sw.resources.cpus_per_task, sw.slurm.partition) == (1, "small")


@pytest.mark.parametrize("executor, slurm, words", [
    ('cpus_per_task = { "50K" = 2 }', "", ["executor.cpus_per_task", "no entry for 21.5K", '"0" = ...']),
    ('cpus_per_task = { "0" = 1, "1M" = 0 }', "", ["executor.cpus_per_task must be at least 1", "entry for 1M"]),
    ('cpus_per_task = { "0" = 1, "lots" = 2 }', "", ["executor.cpus_per_task", "'lots'", "table by size"]),
    ('default = { "0" = "local" }', "", ["executor.default must be a string"]),
    ('time = "12:00"', "", ["executor.time = '12:00' is ambiguous", '"12:00:00"']),
    ('time = 2', "", ["executor.time must be at least 3 minutes"]),
    ('time = 30\ntime_min = 30', "", ["both 'time' and 'time_min'"]),
    ("", 'gres = "gpu:1"\nextra = { gres = "gpu:2" }', ["slurm.gres: also given in slurm.extra"]),
    ("", 'gress = "gpu:1"', ["unknown key 'gress'", "did you mean 'gres'"]),
])
def test_bad_resource_keys_are_one_line(tmp_path, shards, capsys, executor, slurm, words):
    f = sweep_with(tmp_path, shards, executor, slurm)
    assert main(["sweep", "plan", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {f}:"), err
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("text, mins", [(90, 90), ("90", 90), ("01:30:00", 90), ("00:10:30", 11),
                                        ("1-00", 1440), ("1-12:30", 2190), ("2-00:00:00", 2880)])
def test_time_as_slurm_writes_it(text, mins):
    assert minutes("executor.time", text) == mins


def test_runs_pattern_picks_a_subset(tmp_path, shards, capsys):
    f = sweep_with(tmp_path, shards, "")
    sw = load_sweep(f)
    assert chosen(sw, "N20K-*") == {"N20K-D20K"}
    assert chosen(sw, "N20K-*, N100K-D20K") == {"N20K-D20K", "N100K-D20K"}
    assert chosen(sw, None) == {"N20K-D20K", "N100K-D20K"}
    out = tmp_path / "out"
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out), "--dry-run", "--runs", "N1*"]) == 0
    got = capsys.readouterr().out
    assert "would submit N100K-D20K" in got and "N20K-D20K" not in got.split("dry run")[0], got
    assert "1 not in --runs" in got
    assert main(["sweep", "launch", str(f), "--executor", "debug", "--out", str(out), "--runs", "N5*"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--runs 'N5*': matches no run" in err and "N20K-D20K" in err, err
    assert not out.exists()


def test_task_names_fit_slurm():
    assert sbatch.task_name("demo", "C1e18-N25M") == "demo/C1e18-N25M"
    long = sbatch.task_name("s" * 400, "C1e18-N25M")
    assert len(long.encode()) <= sbatch.NAME_MAX and long.endswith("~/C1e18-N25M")


def test_sbatch_reason_is_its_first_error_line():
    text = ("sbatch: error: invalid partition specified: gpu\n"
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert sbatch.reason(text) == "invalid partition specified: gpu"
    assert sbatch.reason("allocation failure: Invalid feature specification\n") == "Invalid feature specification"


def test_paths_are_read_from_the_files_folder(tmp_path, shards, monkeypatch, capsys):
    """data, out and tuned studies are read from the sweep file's folder; a path found only in
    the current directory (the old reading) is kept there, with a warning; where both have one,
    the file's is used, and the warning says the other is not."""
    work, folder = tmp_path / "work", tmp_path / "work" / "sweeps"
    folder.mkdir(parents=True)
    os.symlink(shards, folder / "shards")                    # beside the file
    monkeypatch.chdir(work)
    f = write_sweep_file(Path("sweeps/s.toml"), "shards", name="s", kind="grid", body=GRID, train=QUICK_VAL)
    f.write_text(f.read_text().replace('kind = "grid"', 'kind = "grid"\nout = "../runs/s"'))
    sw = load_sweep(f)
    assert sw.run("N20K-D20K").config.data == os.path.abspath(os.path.join("sweeps", "shards")) and sw.out.as_posix() == "runs/s"
    assert sw.warnings == []
    shutil.copytree(shards, work / "shards")                 # another here: the file's wins, said once
    sw = load_sweep(f)
    assert sw.run("N20K-D20K").config.data == os.path.abspath(os.path.join("sweeps", "shards"))
    assert len(sw.warnings) == 1 and "shards in the current directory is not used" in sw.warnings[0]
    (folder / "shards").unlink()                             # only here: the old reading, with a warning
    sw = load_sweep(f)
    assert sw.run("N20K-D20K").config.data == os.path.abspath("shards")
    assert "read from the current directory as before; write '../shards'" in sw.warnings[0]
    assert main(["sweep", "plan", str(f)]) == 0
    assert "warning: sweeps/s.toml: train.data = 'shards': not in the sweep file's folder" in capsys.readouterr().err
    shutil.rmtree(work / "shards")                           # nowhere: named as missing where the file is
    f.write_text(f.read_text().replace("vocab_size = 260\n", ""))
    with pytest.raises(UserError, match="sweeps/shards"):
        load_sweep(f)


def test_shipped_sweeps_keep_their_paths_from_the_project_root(monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(root)
    sw = load_sweep("sweeps/demo-cpu.toml")
    assert sw.out.as_posix() == "runs/demo-cpu"
    assert sw.runs[0].config.data == os.path.abspath(os.path.join("data", "shards", "default-bytes"))


def test_a_run_recorded_with_a_relative_data_path_keeps_its_identity(tmp_path, monkeypatch):
    """Runs launched before sweeps recorded data absolute (relative to where they were
    launched) are the same runs now: a relaunch from that folder resumes them."""
    from scaling.base.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    old = TrainConfig(params="100K", tokens="1M", data="data/shards/x")
    new = TrainConfig(params="100K", tokens="1M", data=str(tmp_path / "data" / "shards" / "x"))
    assert old.identity() == new.identity()
    assert TrainConfig(params="100K", tokens="1M", data="data/shards/y").identity() != new.identity()
