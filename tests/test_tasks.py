"""Downstream tasks: task files round trip and bad ones are refused in one line naming file
and line; the built-in tasks come from the validation split only; one tiny run scores
two built-in tasks and a task file at every validation point, into metrics.parquet,
run.json, results.parquet and curves.parquet; `scaling eval` on the kept model gives the
run's last validation point again."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from scaling.base.errors import UserError
from scaling.cli import main
from scaling.data.builtin_tasks import load_tasks, validation_texts
from scaling.data.shards import TokenShards
from scaling.data.tasks import CHOICE, GENERATIVE, Task, TaskExample, encode_task, read_task_file, write_task_file
from scaling.data.tokenizer import BytesTokenizer
from scaling.sweep.spec import load_sweep
from scaling.train.task_scores import row_losses, task_columns
from sweep_files import write_sweep_file

ARGS = ["--params", "60K", "--tokens", "40K", "--seq-len", "32", "--batch-size", "8", "--val-points", "3",
        "--no-progress"]
CAPITALS = [("The capital of France is", ["Paris", "Rome", "Oslo"], 0), ("Two plus two is", ["five", "four"], 1),
            ("The sky on a clear day is", ["green", "red", "blue"], 2)]


def _mc_file(path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "choices": c, "label": lab}) + "\n" for p, c, lab in CAPITALS))
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ----------------------------------------------------------------- task files
def test_task_file_round_trip(tmp_path):
    gen = Task("qa", GENERATIVE, (TaskExample("Q: 2+2?\nA:", answer=" 4"), TaskExample("Q: é?\nA:", answer=" ü")),
               shots=(TaskExample("Q: 1+1?\nA:", answer=" 2"),))
    mc = Task("pick", CHOICE, (TaskExample("x", choices=("a", "b", "c"), label=2),),
              shots=(TaskExample("y", choices=("d", "e"), label=1),))
    for task in (gen, mc):
        assert read_task_file(write_task_file(tmp_path / f"{task.name}.jsonl", task)) == task
    assert gen.prefix == "Q: 1+1?\nA: 2\n\n" and mc.prefix == "ye\n\n"
    assert mc.columns() == ["task.pick.bpb", "task.pick.bpb_clm", "task.pick.acc", "task.pick.acc_clm"]
    assert gen.columns() == ["task.qa.bpb", "task.qa.bpb_clm"]


@pytest.mark.parametrize("line, says", [
    ("{not json", "not valid JSON"),
    ('["prompt"]', "expected a JSON object"),
    ('{"prompt": "p"}', "either 'answer'"),
    ('{"prompt": "p", "answer": "a", "choices": ["a", "b"], "label": 0}', "either 'answer'"),
    ('{"prompt": "", "answer": "a"}', "'prompt' must be a non-empty string"),
    ('{"prompt": "p", "answer": ""}', "'answer' must be a non-empty string"),
    ('{"prompt": "p", "choices": ["a"], "label": 0}', "at least 2"),
    ('{"prompt": "p", "choices": ["a", "b"], "label": 2}', "'label' must be the index"),
    ('{"prompt": "p", "choices": ["a", "b"], "label": true}', "'label' must be the index"),
    ('{"prompt": "p", "answer": "a", "label": 0}', "'label' belongs to multiple choice"),
    ('{"prompt": "p", "answer": "a", "shot": "yes"}', "'shot' must be true or false"),
    ('{"prompt": "p", "answr": "a"}', "unknown key 'answr'"),
    ('{"prompt": "p", "choices": ["a", "b"], "label": 0}', "a choice example in a file of generative ones"),
])
def test_bad_task_line_is_one_line_naming_file_and_line(tmp_path, capsys, shards, line, says):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine", "answer": "yes"}\n\n' + line + "\n")
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--data", str(shards), "--out", str(out), "--eval", str(bad)]) == 2
    err = _error(capsys)
    assert f"{bad}:3: " in err and says in err, err
    assert not out.exists()   # refused before anything was written


def test_bad_task_names_and_files(tmp_path, shards):
    shots_only = tmp_path / "shots.jsonl"
    shots_only.write_text('{"prompt": "p", "answer": "a", "shot": true}\n')
    with pytest.raises(UserError, match="no examples to score"):
        read_task_file(shots_only)
    with pytest.raises(UserError, match="task file not found"):
        read_task_file(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="neither a built-in task"):
        load_tasks(["summaries"], shards)
    with pytest.raises(UserError, match="second task named 'docsum'"):
        load_tasks(["docsum", str(write_task_file(tmp_path / "docsum.jsonl", Task("docsum", GENERATIVE, (TaskExample("p", "a"),))))], shards)


def test_sweep_eval_section(tmp_path, shards):
    mc = _mc_file(tmp_path / "capitals.jsonl")
    path = write_sweep_file(tmp_path / "s.toml", shards, name="s", kind="grid", body="[grid]\nsizes = [\"60K\"]\ntokens = [\"40K\"]\n")
    path.write_text(path.read_text() + '\n[eval]\ntasks = ["docsum", "capitals.jsonl"]\n')
    (run,) = load_sweep(path).runs
    assert run.config.eval == ["docsum", str(mc)]
    path.write_text(path.read_text().replace('"capitals.jsonl"', '"nope.jsonl"'))
    with pytest.raises(UserError, match=r"s.toml: eval.tasks: .*nope.jsonl: task file not found"):
        load_sweep(path)
    path.write_text(path.read_text().replace('"nope.jsonl"', '"sums"'))
    with pytest.raises(UserError, match=r"eval.tasks: 'sums' is neither a built-in task"):
        load_sweep(path)


# ----------------------------------------------------------------- built-in tasks, encoding
def test_builtin_tasks_come_from_the_validation_split_only(shards, tmp_path):
    texts = validation_texts(shards)
    assert len(texts) == TokenShards.open(shards, "val").n_docs
    docsum, nextsent = load_tasks(["docsum", "nextsent"], shards)
    assert docsum.kind == GENERATIVE and nextsent.kind == CHOICE and docsum.examples and nextsent.examples
    flat = lambda s: " ".join(s.split())  # noqa: E731
    for ex in docsum.examples:   # the answer is the line above the prompt in a validation document
        assert any(flat(f"{ex.answer} {ex.prompt}") in flat(t) for t in texts)
    for ex in nextsent.examples:
        assert len(ex.choices) == 4 and len(set(ex.choices)) == 4
        assert any(f"{ex.prompt}{ex.correct}" in flat(t) for t in texts)
    # The training split is never read: other training tokens, the same tasks.
    other = tmp_path / "shards"
    shutil.copytree(shards, other)
    train = np.fromfile(other / "train.bin", dtype=np.uint16)
    np.roll(train, 12345).tofile(other / "train.bin")
    assert load_tasks(["docsum", "nextsent"], other) == [docsum, nextsent]


def test_encode_cuts_to_the_window():
    long = Task("t", GENERATIVE, (TaskExample("p" * 40, answer="é" * 20),))
    (enc,) = [encode_task(long, BytesTokenizer(), 16)]
    assert len(enc.answers[0]) == 8 and len(enc.prompts[0]) == 8    # answer <= W/2, prompt the rest
    assert enc.n_bytes[0] == 8   # the kept 8 bytes (4 whole é), not the whole answer's 40
    short = encode_task(Task("t", GENERATIVE, (TaskExample("abc", answer="é"),)), BytesTokenizer(), 16)
    assert short.n_bytes[0] == 2 and len(short.prompts[0]) == 3


def test_accuracy_is_the_lowest_loss_per_byte():
    task = Task("m", CHOICE, (TaskExample("p", choices=("aa", "bbbb"), label=1), TaskExample("q", choices=("c", "d"), label=0)))
    enc = encode_task(task, BytesTokenizer(), 16)
    # Example 1: 3 nats over 2 bytes (1.5/byte) against 4 over 4 (1/byte): the longer, correct one wins.
    cols = task_columns(enc, {"denoise": np.array([3.0, 4.0, 1.0, 2.0]), "clm": np.array([1.0, 8.0, 2.0, 1.0])})
    assert cols["task.m.acc"] == 1.0 and cols["task.m.acc_clm"] == 0.0
    assert cols["task.m.bpb"] == pytest.approx((4.0 + 1.0) / math.log(2) / 5)


def test_ranks_share_the_rows():
    from scaling.base.shapes import model_config
    from scaling.train.model import EncoderDecoder

    torch.manual_seed(0)
    model = EncoderDecoder(model_config("30K", 260, 32)).eval()
    task = encode_task(Task("m", CHOICE, tuple(TaskExample(p, choices=tuple(c), label=lab) for p, c, lab in CAPITALS)),
                       BytesTokenizer(), 32)
    ids = {"pad": 0, "clm": 2}
    for form in ("denoise", "clm"):
        one = row_losses(model, task, form, ids, "cpu", chunk=2)
        two = sum(row_losses(model, task, form, ids, "cpu", chunk=2, rank=r, world=2) for r in (0, 1))
        assert (one > 0).all() and torch.allclose(one, two)
    # Lockstep (a sharded model): 8 rows in chunks of 3 are 3 chunks, 2 on rank 0 and 1 on rank
    # 1, which makes a spare pass that counts nothing; the rows' losses are the same.
    passes = []
    forward = model.token_losses
    model.token_losses = lambda *a: passes.append(1) or forward(*a)
    one = row_losses(model, task, "clm", ids, "cpu", chunk=3)
    for r in (0, 1):
        passes.clear()
        one -= row_losses(model, task, "clm", ids, "cpu", chunk=3, rank=r, world=2, lockstep=True)
        assert len(passes) == 2
    assert torch.allclose(one, torch.zeros_like(one))


# ----------------------------------------------------------------- a run, collect, scaling eval
@pytest.fixture(scope="module")
def sweep_dir(shards, tmp_path_factory) -> Path:
    """A folder with one tiny run scoring docsum, nextsent and a task file, collected."""
    d = tmp_path_factory.mktemp("tasks")
    mc = _mc_file(d / "capitals.jsonl")
    assert main(["train", *ARGS, "--data", str(shards), "--out", str(d / "runs" / "r1"),
                 "--eval", "docsum,nextsent", "--eval", str(mc)]) == 0
    assert main(["sweep", "collect", str(d)]) == 0
    return d


COLS = [f"task.{n}.{c}" for n in ("docsum", "nextsent", "capitals") for c in ("bpb", "bpb_clm", "acc", "acc_clm")
        if not (n == "docsum" and c.startswith("acc"))]


def _sane(values: dict) -> None:
    for c in COLS:
        v = values[c]
        assert (0 < v < 20) if ".bpb" in c else (0 <= v <= 1), (c, v)


def test_run_scores_tasks_at_every_validation_point(sweep_dir):
    metrics = pl.read_parquet(sweep_dir / "runs" / "r1" / "metrics.parquet")
    val = metrics.filter(pl.col("split") == "val")
    assert val.height == 4 and "task.docsum.acc" not in metrics.columns
    for row in val.iter_rows(named=True):
        _sane(row)
        assert row["task_s"] > 0
    first, last = val.row(0, named=True), val.row(-1, named=True)
    assert last["task.docsum.bpb"] < first["task.docsum.bpb"]   # training teaches the text's bytes
    rec = json.loads((sweep_dir / "runs" / "r1" / "run.json").read_text())
    assert rec["tasks"] == {c: last[c] for c in COLS}
    results = pl.read_parquet(sweep_dir / "results.parquet")
    _sane(results.row(0, named=True))
    assert results.row(0, named=True)["task.nextsent.acc"] == last["task.nextsent.acc"]
    curves = pl.read_parquet(sweep_dir / "curves.parquet")
    assert curves.height == 4 and curves["task.capitals.acc"].to_list() == val["task.capitals.acc"].to_list()


def test_demo_prints_each_runs_task_scores(sweep_dir):
    from scaling.demo import task_table

    text = task_table(str(sweep_dir / "results.parquet")).splitlines()
    assert text[1].split() == ["run", "loss", *(f"{t}.{k}" for t in ("capitals", "docsum", "nextsent")
                                                for k in ("bpb", "bpb_clm", "acc", "acc_clm") if t != "docsum" or "acc" not in k)]
    acc = pl.read_parquet(sweep_dir / "results.parquet")["task.nextsent.acc_clm"][0]
    assert text[2].split()[0] == "r1" and text[2].split()[-1] == f"{acc:.3f}"


def test_scaling_eval_gives_the_last_validation_point_again(sweep_dir, tmp_path, capsys):
    run = sweep_dir / "runs" / "r1"
    last = pl.read_parquet(run / "metrics.parquet").filter(pl.col("split") == "val").row(-1, named=True)
    assert main(["eval", str(run), "--tasks", "docsum", "nextsent", str(sweep_dir / "capitals.jsonl")]) == 0
    rec = json.loads((run / "run.json").read_text())
    for c in COLS:
        assert rec["tasks"][c] == pytest.approx(last[c], rel=1e-6, abs=1e-9), c
    # A new task on the whole folder: recorded in run.json and in the results collected again.
    other = write_task_file(tmp_path / "echo.jsonl", Task("echo", GENERATIVE, (TaskExample("say hi: hi. say yo:", answer=" yo"),)))
    capsys.readouterr()
    assert main(["eval", str(sweep_dir), "--tasks", str(other)]) == 0
    assert "task.echo.bpb" in capsys.readouterr().out
    results = pl.read_parquet(sweep_dir / "results.parquet")
    assert results["task.echo.bpb"][0] > 0 and results["task.docsum.bpb"][0] == pytest.approx(last["task.docsum.bpb"], rel=1e-6)
    assert main(["eval", str(sweep_dir), "--tasks", "sums"]) == 2 and "neither a built-in task" in _error(capsys)


def test_scaling_eval_on_a_sweep_leaves_out_runs_that_kept_no_model(sweep_dir, tmp_path, capsys):
    import shutil

    for name in ("r1", "r2"):
        shutil.copytree(sweep_dir / "runs" / "r1", tmp_path / "runs" / name)
    (tmp_path / "runs" / "r2" / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["eval", str(tmp_path), "--eval", "nextsent"]) == 0
    out = capsys.readouterr()
    assert "1 completed run(s) kept no model and are not scored: r2" in out.err
    assert "task.nextsent.acc" in json.loads((tmp_path / "runs" / "r1" / "run.json").read_text())["tasks"]
    (tmp_path / "runs" / "r1" / "model.safetensors").unlink()
    assert main(["eval", str(tmp_path), "--eval", "nextsent"]) == 2
    assert "none of its 2 completed runs kept its model" in _error(capsys)
