"""`scaling sweep plan` warns on stderr, one line each, when embeddings are more than half a model's
parameters (naming the sizes) and when the lr rule's cap sets the runs' lr (counting them)."""

from __future__ import annotations

from scaling.cli import main
from scaling.train.schedule import LR_CAP, lr_capped, lr_rule

SWEEP = """
[sweep]
name = "w"
kind = "isoflop"
vocab_size = {vocab}

[isoflop]
budgets = [1e12, 4e12]
sizes = ["300K", "600K", "1.2M"]

[train]
seq_len = 32
batch_size = 8
{lr}
"""


def _plan(tmp_path, capsys, vocab: int, lr: str = "") -> tuple[str, list[str]]:
    f = tmp_path / "w.toml"
    f.write_text(SWEEP.format(vocab=vocab, lr=lr))
    assert main(["sweep", "plan", str(f)]) == 0
    said = capsys.readouterr()
    return said.out, [line for line in said.err.splitlines() if line.startswith("warning: ")]


def test_embeddings_over_half_named_by_size(tmp_path, capsys):
    _, warns = _plan(tmp_path, capsys, vocab=2048, lr="lr = 0.001")
    assert len(warns) == 1 and "embeddings are more than half the parameters of" in warns[0]
    assert "N=" in warns[0] and "vocabulary 2048" in warns[0]
    _, warns = _plan(tmp_path, capsys, vocab=260, lr="lr = 0.001")
    assert warns == []


def test_lr_cap_binding_is_counted(tmp_path, capsys):
    _, warns = _plan(tmp_path, capsys, vocab=260)
    assert len(warns) == 1 and warns[0].startswith(f"warning: lr: 2 of 6 runs sit at the lr rule's cap of {LR_CAP:g} (non-embedding N up to 262K)")
    assert lr_capped(100_000) and lr_rule(100_000) == LR_CAP and not lr_capped(10_000_000)
    # An lr the file sets is not the rule's: no warning.
    _, warns = _plan(tmp_path, capsys, vocab=260, lr="lr = 0.002")
    assert warns == []
