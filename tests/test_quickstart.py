"""The README's "Your own data" quickstart, run line by line as written, on a corpus the lab
does not ship (the standard library's prose, tests/e2e_corpus.py) with a tokenizer file the lab
did not make (a byte-level BPE `tokenizer.json` built here with `tokenizers`, its own special
tokens at ids the lab never assumes).

The sweep file the README names (sweeps/first-cpu.toml) is centred too small for this corpus on
purpose: the first fit must name its edge budgets, `scaling sweep extend` must write the runs that
move them, and the second fit must have an interior minimum at every budget and a
non-degenerate law. The kept models must reload to their final loss, score and generate.

Only the README's block is run (in a scratch folder holding the corpus, the held-out file and the
tokenizer under the names the README uses, and a copy of sweeps/): the test is what the README
says, and the README is what the test does.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from e2e_corpus import documents
from scaling.cli import main

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> list[list[str]]:
    """The README's "Your own data" block: one argv per `scaling` command (`&&` splits a line)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Your own data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    out = []
    for line in block.splitlines():
        line = re.split(r"\s#", line, maxsplit=1)[0].strip()
        for part in filter(None, (p.strip() for p in line.split("&&"))):
            argv = shlex.split(part)
            assert argv[0] == "scaling", f"README quickstart: {part!r} is not a scaling command"
            out.append(argv[1:])
    return out


def _tokenizer_file(path: Path, texts: list[str], vocab: int) -> None:
    """A user's tokenizer.json: byte-level BPE with `<unk>` 0, `<s>` 1, `</s>` 2 (no pad, no
    [CLM]: the lab adds them after the vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(texts, trainer=trainer)
    hf.save(str(path))


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """The quickstart run in a scratch folder: (folder, each command's argv and stdout)."""
    import contextlib
    import io
    import os

    here = tmp_path_factory.mktemp("quickstart")
    docs = documents()
    held_out = docs[-40:]
    with open(here / "my-corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs[:-40])
    with open(here / "my-held-out.jsonl", "w") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in held_out)
    _tokenizer_file(here / "my-tokenizer.json", docs[:-40], 510)
    shutil.copytree(ROOT / "sweeps", here / "sweeps")
    outputs = []
    old = Path.cwd()
    os.chdir(here)
    try:
        for argv in quickstart():
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = main(argv)
            outputs.append((argv, buf.getvalue()))
            assert rc == 0, f"scaling {shlex.join(argv)} exited {rc}:\n{buf.getvalue()[-2000:]}"
    finally:
        os.chdir(old)
    return here, outputs


def _output(outputs, *words) -> list[str]:
    return [out for argv, out in outputs if argv[: len(words)] == list(words)]


def test_quickstart_recentres_an_off_centre_sweep(walked):
    here, outputs = walked
    first_fit, final_fit = _output(outputs, "fit")
    # The first sweep is off-centre: the fit names its edge budgets and which way to move.
    assert "lowest loss at the largest size" in first_fit and "move the sizes up" in first_fit
    extend_text, = _output(outputs, "sweep", "extend")
    assert "new runs" in extend_text
    # After the runs `sweep extend` wrote: every budget's minimum inside its sizes, and a law.
    fit = json.loads(next(here.glob("runs/*/fit.json")).read_text())
    assert fit["edges"] == []
    a3 = fit["approach3"]
    assert not any("the law is degenerate" in w for w in a3["warnings"]), a3["warnings"]
    assert a3["bootstrap_degenerate"] < 50, a3["warnings"]     # under 5% of the 1,000 refits
    assert a3["E"] > 0 and 0 < a3["alpha"] < 2 and 0 < a3["beta"] < 2
    assert len(fit["approach2"]["budgets"]) >= 3
    assert "lowest loss at" not in final_fit


def test_quickstart_keeps_models_that_reload_score_and_generate(walked):
    import scaling

    here, outputs = walked
    score_argv = next(argv for argv, _ in outputs if argv[0] == "score")
    run = here / score_argv[1]
    kept = scaling.load_run(run)
    record = json.loads((run / "run.json").read_text())
    assert kept.validate()["val_loss"] == pytest.approx(record["val"]["mixed"]["loss"], abs=1e-4)
    score_text, = _output(outputs, "score")
    assert "bits/byte" in score_text or "bpb" in score_text
    generated, = _output(outputs, "generate")
    assert generated.strip()
