"""Sweep files: expansion to runs, and every bad input reported with file, key and reason."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from scaling.cli import main
from scaling.base.errors import UserError
from scaling.train.model import ModelConfig
from scaling.sweep.spec import load_sweep

REPO = Path(__file__).resolve().parents[1]

# A stated vocabulary (the bytes tokenizer's 260) sizes the models without any data on disk.
HEAD = """
[sweep]
name = "t"
kind = "{kind}"
vocab_size = 260
"""
TRAIN = """
[train]
seq_len = 32
batch_size = 4
"""


def write(tmp_path: Path, body: str, kind: str = "isoflop", train: str = TRAIN) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(textwrap.dedent(HEAD.format(kind=kind)) + textwrap.dedent(train) + textwrap.dedent(body))
    return p


def test_isoflop_spends_each_budget_with_the_models_own_flops(tmp_path):
    p = write(tmp_path, """
        [isoflop]
        budgets = [1e12, "3e12", 1e13]
        sizes_per_budget = 4
        spread = 3
    """)
    s = load_sweep(p)
    assert len(s.runs) == 12 and len({r.name for r in s.runs}) == 12
    batch = 4 * 32
    for budget in (1e12, 3e12, 1e13):
        runs = [r for r in s.runs if r.budget == budget]
        assert len(runs) == 4
        sizes = [r.n_params for r in runs]
        assert sizes == sorted(sizes) and sizes[-1] / sizes[0] > 4  # spread 3 either side
        for r in runs:
            m = ModelConfig.from_params(r.config.params, vocab_size=260, max_len=32)
            assert r.n_params == m.n_params()
            assert r.flops_per_token == pytest.approx(m.flops_per_token(32, 0.15))
            # whole batches, spending the budget to within one batch
            assert r.tokens % batch == 0
            assert budget - batch * r.flops_per_token < r.flops <= budget
            assert r.config.extra["budget"] == budget
        # tokens per parameter straddle the guessed optimum (20)
        tpp = [r.tokens_per_param for r in runs]
        assert min(tpp) < 20 < max(tpp)


def test_grid_with_tokens_per_param_multiples(tmp_path):
    p = write(tmp_path, """
        [grid]
        sizes = ["100K", 200000]
        tokens_per_param = ["10x", 20, "2xC"]
    """, kind="grid")
    s = load_sweep(p)
    assert len(s.runs) == 6
    for r in s.runs:
        assert r.budget is None
        m = round(r.tokens_per_param)
        assert m in (10, 20, 40)
        assert r.tokens == (m * r.n_params) // 128 * 128


def test_grid_with_token_counts_and_shared_settings(tmp_path):
    p = write(tmp_path, """
        [grid]
        sizes = ["100K"]
        tokens = ["1M", 2000000]
        [executor]
        cpus_per_task = 2
        gpus_per_node = 4
        time_min = 30
        [slurm]
        partition = "gpu"
        extra = { exclusive = "" }
    """, kind="grid", train=TRAIN + "lr = 1e-3\nclm_ratio = 0.5\n")
    s = load_sweep(p)
    # The batch is global: 4 sequences x 32 tokens a step, shared by the 4 GPUs' processes.
    assert [r.tokens for r in s.runs] == [1_000_000 // 128 * 128, 2_000_000 // 128 * 128]
    cfg = s.runs[0].config
    assert (cfg.lr, cfg.clm_ratio, cfg.devices, cfg.seq_len) == (1e-3, 0.5, 4, 32)
    assert s.resources.time_min == 30 and s.slurm.partition == "gpu" and s.slurm.extra == {"exclusive": ""}


def test_explicit_isoflop_sizes(tmp_path):
    p = write(tmp_path, """
        [isoflop]
        budgets = [1e12]
        sizes = ["50K", "100K", "200K"]
    """)
    s = load_sweep(p)
    assert [r.name for r in s.runs] == ["C1e12-N50K", "C1e12-N100K", "C1e12-N200K"]


BAD = [
    # (body, kind, train, words the message must contain)
    ("[isoflop]\nbudgets = [1e12]\n[bogus]\nx = 1\n", "isoflop", TRAIN, ["unknown section [bogus]"]),
    ("[isoflop]\nbudgets = [1e12]\nsize_per_budget = 3\n", "isoflop", TRAIN, ["[isoflop] unknown key 'size_per_budget'"]),
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", TRAIN + "sequence_length = 64\n", ["[train] unknown key 'sequence_length'"]),
    # A typo of a [train] key the file does not set: the suggestion and the known list name it.
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", TRAIN + "noise_densty = 0.2\n",
     ["[train] unknown key 'noise_densty'", "did you mean 'noise_density'?", "known: ", ", noise_density,"]),
    ("[isoflop]\nbudgets = [1e12]\nsizes_per_budgt = 3\n", "isoflop", TRAIN, ["did you mean 'sizes_per_budget'?"]),
    # A typo of a key the sweep sets: pointed at, never listed as known.
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", TRAIN + "token = 5\n",
     ["[train] unknown key 'token'", "'tokens' is set by the sweep itself, not in [train]"]),
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", "[train]\nseq_len = 32\nbatch_size = \"big\"\n", ["train.batch_size must be an integer", "'big'"]),
    ("[isoflop]\nbudgets = [1e12]\nsizes_per_budget = 2.5\n", "isoflop", TRAIN, ["isoflop.sizes_per_budget must be an integer"]),
    ("[isoflop]\nbudgets = [\"lots\"]\n", "isoflop", TRAIN, ["isoflop.budgets[0]", "'lots'"]),
    ("[isoflop]\nbudgets = [1e12, -3]\n", "isoflop", TRAIN, ["isoflop.budgets[1]", "positive"]),
    # a size whose FLOPs per token exceed what the budget can buy: less than one batch
    ("[isoflop]\nbudgets = [1e8]\nsizes = [\"1M\"]\n", "isoflop", TRAIN, ["isoflop.budgets[0] = 1e8", "size 1M", "less than one batch"]),
    ("[isoflop]\nbudgets = [1e3]\n", "isoflop", TRAIN, ["isoflop.budgets[0] = 1e3", "budget too small"]),
    ("[grid]\nsizes = [\"100K\"]\ntokens = [\"100\"]\n", "grid", TRAIN, ["grid.tokens[0] = '100'", "less than one batch"]),
    ("[grid]\nsizes = [\"100K\"]\ntokens = [\"1M\"]\ntokens_per_param = [20]\n", "grid", TRAIN, ["exactly one of"]),
    ("[grid]\nsizes = [\"100 parameters\"]\ntokens = [\"1M\"]\n", "grid", TRAIN, ["grid.sizes[0]"]),
    ("[grid]\nsizes = [\"100K\"]\ntokens_per_param = [\"20y\"]\n", "grid", TRAIN, ["grid.tokens_per_param[0]"]),
    ("[grid]\nsizes = [\"100K\"]\ntokens = [\"1M\"]\n", "isoflop", TRAIN, ["[grid] given but sweep.kind is 'isoflop'"]),
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", TRAIN + "tokens = 5\n", ["train.tokens", "set by the sweep"]),
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", TRAIN + "clm_ratio = 1.5\n", ["train.clm_ratio", "[0, 1]"]),
    # Every job would have died on it (a traceback, and launch exiting 0): refused up front.
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", TRAIN + "noise_density = 0.6\n", ["train.noise_density", "(0, 0.5)"]),
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", TRAIN + "beta2 = 1.0\n", ["train.beta2", "[0, 1)"]),
    ("[isoflop]\nbudgets = [1e12]\n", "isoflop", TRAIN + "val_examples = 0\n", ["train.val_examples", ">= 1"]),
    ("[isoflop]\nbudgets = [1e12]\n[executor]\ndefault = \"kubernetes\"\n", "isoflop", TRAIN, ["executor.default"]),
    ("[isoflop]\nbudgets = [1e12]\n[executor]\ntime_min = 2\n", "isoflop", TRAIN, ["executor.time_min", "at least 3"]),
    ("[isoflop]\nbudgets = [1e12]\n[slurm]\nextra = { exclusive = true }\n", "isoflop", TRAIN, ["slurm.extra.exclusive"]),
    ("[isoflop]\nbudgets = 1e12\n", "isoflop", TRAIN, ["isoflop.budgets must be a list"]),
]


@pytest.mark.parametrize("body,kind,train,words", BAD)
def test_bad_sweep_files_name_file_key_and_reason(tmp_path, capsys, body, kind, train, words):
    p = write(tmp_path, body, kind=kind, train=train)
    with pytest.raises(UserError) as e:
        load_sweep(p)
    msg = str(e.value)
    assert msg.startswith(str(p)), msg
    for w in words:
        assert w in msg, msg
    # the CLI: one line, exit 2, nothing written
    out = tmp_path / "out"
    assert main(["sweep", "launch", str(p), "--executor", "local", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not out.exists()


def test_not_toml_and_missing_file(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[sweep\nkind = 1")
    assert main(["sweep", "plan", str(p)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["sweep", "plan", str(tmp_path / "nope.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_plan_prints_every_run_and_the_totals(tmp_path, capsys):
    p = write(tmp_path, """
        [isoflop]
        budgets = [1e12, 1e13]
        sizes_per_budget = 3
        [executor]
        achieved_flops = 1e11
        overhead_s = 0
        parallelism = 2
    """)
    assert main(["sweep", "plan", str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:7] == ["run", "N", "N", "non-emb", "D", "C", "(FLOPs)"]
    assert len(out) == 1 + 6 + 2
    # time estimate = FLOPs / achieved FLOP/s: 6 runs of ~1e12..1e13 FLOPs at 1e11 -> ~10..100 s each
    assert "6 runs" in out[-2] and "1e+11 FLOP/s per job (set in [executor] achieved_flops)" in out[-2]
    assert out[-1].startswith("weights: ") and "of the 6 runs" in out[-1]
    row = out[1].split()
    assert row[0] == "C1e12-N" + row[0].split("-N")[1] and row[-1] in ("0m10s", "0m09s")



def test_isoflop_steps_gives_every_run_the_same_updates_with_its_own_batch(tmp_path):
    p = write(tmp_path, """
        [isoflop]
        budgets = [1e12, 1e13]
        sizes_per_budget = 3
        spread = 3
        steps = 200
    """)
    s = load_sweep(p)
    for r in s.runs:
        per_step = r.config.batch_size * 32
        steps = r.tokens // per_step
        assert r.tokens % per_step == 0 and 150 <= steps <= 270  # rounding of the batch to whole sequences
        assert r.budget - per_step * r.flops_per_token < r.flops <= r.budget
    big = [r for r in s.runs if r.budget == 1e13]
    assert big[0].config.batch_size > big[-1].config.batch_size  # the smallest model has the most tokens
    bad = write(tmp_path, """
        [isoflop]
        budgets = [1e12]
        steps = 3
    """)
    with pytest.raises(UserError, match=r"isoflop.steps must be at least 10"):
        load_sweep(bad)

SHIPPED = sorted((REPO / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweep_files_expand(path):
    s = load_sweep(path)
    assert s.runs, path
    if path.stem == "demo-cpu":
        budgets = {r.budget for r in s.runs}
        assert s.kind == "isoflop" and len(budgets) >= 3
        assert len(budgets) >= 5 and all(sum(r.budget == b for r in s.runs) >= 4 for b in budgets)
        # must finish on a 2-core laptop in under 10 minutes with the fits: training in under 9
        # by the file's own throughput model (measured on 2 cores, see the file)
        job_s = sum(s.resources.run_seconds(r.tokens, r.flops) for r in s.runs)
        assert job_s / s.resources.concurrent() < 9 * 60
    if path.stem == "isoflop-gpu":
        budgets = sorted({r.budget for r in s.runs})
        assert budgets[0] == pytest.approx(1e17) and budgets[-1] == pytest.approx(1e19)
        assert min(r.n_params for r in s.runs) < 30e6 and max(r.n_params for r in s.runs) > 0.7e9
        assert s.resources.gpus_per_node >= 1
    if path.stem == "alexatm-ladder":
        assert math.log10(max(r.n_params for r in s.runs) / min(r.n_params for r in s.runs)) >= 1.5


def test_shipped_sweep_files_exist():
    assert {p.stem for p in SHIPPED} >= {"demo-cpu", "isoflop-gpu", "alexatm-ladder"}


def test_the_known_keys_of_train_leave_out_what_the_sweep_sets(tmp_path):
    from scaling.sweep.spec import _OWNED

    p = write(tmp_path, "[isoflop]\nbudgets = [1e12]\n", kind="isoflop", train=TRAIN + "zzz_unrelated = 1\n")
    with pytest.raises(UserError) as e:
        load_sweep(p)
    known = str(e.value).split("known: ", 1)[1].rstrip(")").split(", ")
    assert "seq_len" in known and not set(known) & _OWNED, known
