"""The analysis notebooks run top to bottom on a fresh kernel (nbclient), against a small
sweep on disk, and are kept in git without outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep_fixture import write_sweep

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "analysis").glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"


def test_there_are_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["fit.ipynb", "frontier.ipynb", "your_table.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_a_fresh_kernel(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code), "commit notebooks without outputs"
    sweep = write_sweep(tmp_path / "sweep")
    monkeypatch.setenv("SCALING_SWEEP", str(sweep))     # the kernel inherits the environment
    # A CellExecutionError (any error in any cell) fails the test.
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figs = [o for o in outputs if o.output_type == "display_data" and PLOTLY in o.get("data", {})]
    assert len(figs) >= 3, f"{path.name} drew {len(figs)} figures"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "runs" in text


def test_a_relative_sweep_is_read_from_where_jupyter_started(tmp_path, monkeypatch):
    """Jupyter runs the kernel in analysis/; a relative SCALING_SWEEP is read against the
    directory it was started from ($PWD, inherited by the kernel), not against analysis/."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    path = ROOT / "analysis" / "fit.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"][:1]      # the cell that reads the sweep
    write_sweep(tmp_path / "my-sweep")
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("SCALING_SWEEP", "my-sweep")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    assert f"28 runs from {tmp_path / 'my-sweep' / 'results.parquet'}" in text, text
