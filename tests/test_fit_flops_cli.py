"""`scaling fit --flops`: the count the user states is the one the fit derives with (issue 27's
one FLOP convention, from the command line)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from scaling.cli import main


def _table(path):
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(1e6, 1e8, 6), 4)
    d = n * np.tile([5.0, 20, 80, 320], 6)
    loss = (1.7 + 400 / n ** 0.34 + 1200 / d ** 0.3) * np.exp(0.002 * rng.standard_normal(n.size))
    pl.DataFrame({"params": n, "tokens": d, "loss": loss}).write_csv(path)
    return path


def test_a_stated_count_is_the_fits_count(tmp_path, capsys):
    results = _table(tmp_path / "r.csv")
    argv = ["fit", str(results), "--approach", "3", "--bootstrap", "20", "--no-holdout", "--json", "--no-progress"]
    assert main(argv + ["--flops", "8*N^1"]) == 0
    eight = json.loads(capsys.readouterr().out)["approach3"]
    assert main(argv) == 0
    six = json.loads(capsys.readouterr().out)["approach3"]
    assert eight["flop_count"]["kind"] == "power" and eight["flop_count"]["k"] == 8.0
    assert six["flop_count"]["kind"] == "6nd"
    # Same law, another count: the same compute buys 3/4 of the tokens, so the optimum moves.
    assert eight["alpha"] == six["alpha"] and eight["G"] != six["G"]


def test_a_bad_count_is_one_line_before_the_file_is_read(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "absent.csv"), "--flops", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --flops") and "\n" not in err
