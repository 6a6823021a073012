"""Property-based fuzzing of what users hand the CLI: sweep files, results tables and command
line arguments. Whatever they hold, the CLI (called in-process) ends in exit 0 or in ONE
`error:` line with exit 2 -- never a traceback -- and a rejected input leaves no file behind:
no sweep directory (nothing submitted), no fit file, no run directory.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from scaling.cli import main

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def scratch():
    """A fresh directory per example (hypothesis runs many examples in one test call)."""
    dirs = []

    def make() -> Path:
        dirs.append(Path(tempfile.mkdtemp(prefix="scaling-fuzz-")))
        return dirs[-1]
    yield make
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def cli(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_one_line_error(rc: int, err: str, argv) -> None:
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    # What was refused, for --hypothesis-show-statistics: the message without paths and values.
    event(re.sub(r"(/\S*|'[^']*'|\"[^\"]*\")", "_", errors[0])[:70] if errors else f"rc {rc}, no error line")
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, (argv, rc, err[-2000:])
    assert err.rstrip().splitlines()[-1] == errors[0], (argv, err)   # the error is the last word


# ------------------------------------------------------------------ TOML writing
def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)   # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml(doc: dict) -> str:
    out = []
    for section, body in doc.items():
        out.append(f"[{section}]")
        out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


def base_sweep(shards: Path) -> dict:
    return {
        "sweep": {"name": "fuzz", "kind": "grid", "vocab_size": 260},
        "train": {"data": str(shards), "seq_len": 32, "batch_size": 8, "val_points": 2, "val_examples": 16,
                  "noise_density": 0.15, "clm_ratio": 0.2, "lr": 0.003},
        "grid": {"sizes": ["20K", "30K"], "tokens": ["2K"]},
        "executor": {"parallelism": 1, "time_min": 10, "cpus_per_task": 1},
        "slurm": {"signal_delay_s": 90},
    }


DELETE = object()
scalars = st.one_of(
    st.integers(-10**13, 10**13), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=10), st.sampled_from(["20K", "2K", "1e10", "0", "-1", "", "rule", "tuned", "nan", "1Q", "cuda"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(min_size=1, max_size=6), scalars, max_size=2))
# Keys the sweep file has, keys it could have, and keys it must not.
KEYS = [("sweep", k) for k in ("name", "kind", "vocab_size", "out", "bogus")] + \
       [("train", k) for k in ("data", "seq_len", "batch_size", "val_points", "val_examples", "noise_density",
                               "clm_ratio", "lr", "tokens", "params", "seed", "micro_batch", "warmup_frac",
                               "mean_span", "device", "checkpoint_every_s", "bogus")] + \
       [("grid", k) for k in ("sizes", "tokens", "bogus")] + [("isoflop", k) for k in ("budgets", "sizes")] + \
       [("executor", k) for k in ("parallelism", "time_min", "cpus_per_task", "tasks_per_node", "nodes",
                                  "gpus_per_node", "default", "mem_gb")] + \
       [("slurm", k) for k in ("signal_delay_s", "max_num_timeout", "partition", "extra")] + [("bogus", "x")]
mutations = st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(values, st.just(DELETE))), min_size=1, max_size=3)


@FUZZ
@given(muts=mutations, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzzed_sweep_files_end_in_one_line_and_exit_2_before_anything_is_submitted(shards, scratch, capsys, muts, cut):
    doc = base_sweep(shards)
    for (section, key), v in muts:
        if v is DELETE:
            doc.get(section, {}).pop(key, None)
        else:
            doc.setdefault(section, {})[key] = v
    text = toml(doc)
    if cut is not None:   # a file cut short (a copy in progress, an editor crash)
        text = text[: int(len(text) * cut)]
    d = scratch()
    f = d / "fuzz.toml"
    f.write_text(text)
    rc, err = cli(capsys, ["sweep", "plan", f])
    out = d / "out"
    event(f"sweep plan: exit {rc}")
    if rc == 0:   # a valid sweep: launching it would train; the dry run must pass and write nothing
        rc, err = cli(capsys, ["sweep", "launch", f, "--executor", "debug", "--out", out, "--dry-run"])
        assert rc == 0 and not out.exists(), (text, err)
        return
    assert_one_line_error(rc, err, text)
    rc, err = cli(capsys, ["sweep", "launch", f, "--executor", "debug", "--out", out])
    assert_one_line_error(rc, err, text)
    assert not out.exists(), text   # nothing submitted, no ledger, no half a sweep directory


# ------------------------------------------------------------------ results tables
NUMBERS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(1e-3, 1e12))
COLUMN_VALUES = {
    "float": lambda n: st.lists(NUMBERS, min_size=n, max_size=n),
    "int": lambda n: st.lists(st.one_of(st.none(), st.integers(-10**12, 10**15)), min_size=n, max_size=n),
    "str": lambda n: st.lists(st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["completed", "failed", "1e9", "x"])),
                              min_size=n, max_size=n),
}


@st.composite
def tables(draw):
    n = draw(st.integers(0, 12))
    names = draw(st.lists(st.sampled_from(["params", "tokens", "loss", "flops", "budget", "run", "status", "loss_se",
                                           "loss_denoise", "loss_clm", "Model Size", "other"]),
                          unique=True, max_size=8))
    cols = {}
    for name in names:
        kind = draw(st.sampled_from(sorted(COLUMN_VALUES)))
        cols[name] = pl.Series(name, draw(COLUMN_VALUES[kind](n)),
                               dtype={"float": pl.Float64, "int": pl.Int64, "str": pl.Utf8}[kind])
    return pl.DataFrame(cols) if cols else pl.DataFrame()


@FUZZ
@given(table=tables(), fmt=st.sampled_from(["csv", "parquet", "garbage.csv", "garbage.parquet", "tsv", "json"]),
       columns=st.one_of(st.none(), st.sampled_from(["params=Model Size", "loss=other", "bogus=x", "params", "=,"])))
def test_fuzzed_results_tables_end_in_one_line_and_exit_2_without_a_fit_file(scratch, capsys, table, fmt, columns):
    d = scratch()
    path = d / f"runs.{fmt.split('.')[-1]}"
    if fmt.startswith("garbage"):
        path.write_bytes(b"PAR1\x00\x01params,loss\n1,2\n\xff\xfe")
    elif fmt == "parquet":
        table.write_parquet(path)
    elif fmt in ("csv", "tsv"):
        table.write_csv(path, separator="\t" if fmt == "tsv" else ",")
    else:
        path.write_text(table.write_json())
    out = d / "fit.json"
    argv = ["fit", path, "--bootstrap", "0", "--no-progress", "--no-holdout", "--out", out]
    if columns is not None:
        argv += ["--columns", columns]
    rc, err = cli(capsys, argv)
    event(f"fit: exit {rc}")
    if rc == 0:
        assert json.loads(out.read_text())["n_runs"] > 0
        return
    assert_one_line_error(rc, err, (table, fmt, columns))
    assert not out.exists()


# ------------------------------------------------------------------ arguments
ARG_VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "8", "1e300", "nan", "inf", "-inf", "", "x", "2M", "20K", "1.5", "0.6",
                     "3e-3", "-0", "1_000", "0x10", "1Q", "10%", "auto", "cuda", "local"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8),
    st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
)
TRAIN_FLAGS = ["--params", "--tokens", "--lr", "--seed", "--batch-size", "--micro-batch", "--seq-len", "--clm-ratio",
               "--warmup-frac", "--device", "--precision", "--devices", "--val-points", "--checkpoint-every",
               "--bogus", "-x", "--untied", "--compile", "--resume"]
FIT_FLAGS = ["--approach", "--bootstrap", "--seed", "--columns", "--drop-top-loss", "--holdout-top", "--fix",
             "--method", "--profile", "--loss-noise", "--curves", "--bogus", "--rollout", "--json"]


def flag_lists(flags):
    return st.lists(st.tuples(st.sampled_from(flags), ARG_VALUES), max_size=4).map(
        lambda pairs: [x for flag, v in pairs for x in ((flag,) if flag in ("--untied", "--compile", "--resume",
                                                                           "--rollout", "--json") else (flag, v))])


@FUZZ
@given(params=ARG_VALUES, tokens=ARG_VALUES, extra=flag_lists(TRAIN_FLAGS))
def test_fuzzed_train_arguments_end_in_one_line_and_exit_2_without_a_run(scratch, capsys, params, tokens, extra):
    # --data points nowhere, so even a valid command line stops before training: every
    # argument is checked before the data is looked for.
    d = scratch()
    out = d / "run"
    argv = ["train", "--params", params, "--tokens", tokens, "--data", d / "no-such-shards", "--out", out, "--no-progress", *extra]
    rc, err = cli(capsys, argv)
    assert_one_line_error(rc, err, argv)
    assert not out.exists(), argv


@pytest.fixture(scope="module")
def good_table(tmp_path_factory):
    from sweep_fixture import write_sweep

    return write_sweep(tmp_path_factory.mktemp("fuzzfit"), sizes_per_budget=5) / "results.parquet"


@FUZZ
@given(extra=flag_lists(FIT_FLAGS))
# Found by this fuzzer: a file name with a record separator, which str.splitlines breaks at.
@example(extra=["--curves", "\x1e"])
def test_fuzzed_fit_arguments_end_in_one_line_and_exit_2_without_a_fit_file(good_table, scratch, capsys, extra):
    # Bootstrap sizes are kept small: a valid command line fits for real.
    extra = [("0" if re.fullmatch(r"\d{3,}", a) and extra[i - 1] == "--bootstrap" else a) for i, a in enumerate(extra)]
    out = scratch() / "fit.json"
    argv = ["fit", good_table, "--no-progress", "--bootstrap", "0", *extra, "--out", out]
    rc, err = cli(capsys, argv)
    if rc == 0:
        assert json.loads(out.read_text())["n_runs"] > 0
        return
    assert_one_line_error(rc, err, argv)
    assert not out.exists(), argv
