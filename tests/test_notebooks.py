"""The analysis notebooks run top to bottom (their code cells, in order, in analysis/)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "analysis").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, capsys):
    import plotly.graph_objects as go

    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))  # no browser here
    monkeypatch.chdir(path.parent)
    has_data = (path.parent / "../runs/demo-cpu/results.parquet").exists() or (
        path.parent / "../../shared/data/chinchilla-epoch/svg_extracted_data.csv").exists()
    if not has_data:
        pytest.skip("no results table (run `make demo`) and no ../shared/data")
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    env: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), f"{path.name}", "exec"), env)
    assert shown, "the notebook drew no figure"
    assert env["fit"].get("approach3") or env["fit"].get("approach2")
    out = capsys.readouterr().out
    assert "runs" in out
