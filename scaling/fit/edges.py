"""Budgets whose lowest loss sits at an edge of their sizes, and which way to move them.

An IsoFLOP budget says where its optimum is only when its lowest-loss run has a larger and a
smaller size beside it. When the lowest loss is at the smallest or the largest size, the
optimum lies beyond the sizes tried: Approach 2 refuses that budget, and Approach 3 is fitted
on runs that all sit on one side of the valley (its E or a term can vanish). The cure is more
runs beyond the edge, at the budget's own spacing: `find_edges` names those budgets and the
sizes to add; `scaling sweep extend` (scaling/fit/extend.py) writes them as a sweep file.

How far: a budget's minimum is at least one step beyond its edge, and likely more (its run at
the edge only bounds it). We add max(2, k // 2) steps for a budget of k sizes: the old edge
then has at least two sizes beyond it, enough for a parabola's window on both sides, and a
window of k sizes moved by about half its width puts an optimum near the old edge near its
middle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from scaling.fit import isoflop

MIN_SIZES = 3    # fewer distinct sizes have no interior, so no edge to speak of (as approach 2)


def _label(n: float) -> str:
    """2.1e6 -> '2.1M' (a count as people write it; scaling.base.config.format_count's style)."""
    for unit, v in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= v:
            return f"{n / v:.3g}{unit}"
    return f"{n:.3g}"


@dataclass(frozen=True)
class Edge:
    """One budget whose lowest loss is at the smallest or largest of its sizes."""

    budget: float               # the budget's FLOPs
    side: str                   # "smallest" or "largest"
    n_edge: float               # the size of the lowest-loss run (N as the fit read it)
    loss: float                 # its loss
    run: str | None             # its run id
    sizes: int                  # distinct sizes at this budget
    step: float                 # the budget's spacing: geometric mean ratio of neighbouring sizes
    add: tuple                  # sizes to add beyond the edge, nearest first

    @property
    def move(self) -> float:
        """How far the budget's window of sizes should move: > 1 up, < 1 down."""
        return (self.add[-1] / self.n_edge) if self.add else 1.0

    def line(self) -> str:
        """One sentence: which budget, which edge, which way and how far."""
        way = "up" if self.side == "largest" else "down"
        factor = self.move if self.move >= 1 else 1 / self.move
        budget = f"{self.budget:.3g}".replace("e+", "e")
        run = f", run {self.run}" if self.run else ""
        return (f"budget {budget}: lowest loss at the {self.side} size (N={_label(self.n_edge)}, "
                f"loss {self.loss:.4f}{run}); move the sizes {way} ~{factor:.2g}x: add N="
                + ", ".join(_label(n) for n in self.add) + f" (its spacing, x{self.step:.2g} per size)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["add"] = list(self.add)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Edge":
        return cls(**{**d, "add": tuple(d["add"])})


def steps_to_add(sizes: int) -> int:
    """Sizes to add beyond an edge of a budget with `sizes` sizes (see the module's docstring)."""
    return max(2, sizes // 2)


def find_edges(n: np.ndarray, loss: np.ndarray, flops: np.ndarray, budget: np.ndarray | None,
               runs: list | None = None) -> list[Edge]:
    """Every budget (grouped as approach 2 groups them, `isoflop.group_budgets`) of 3 or more
    sizes whose lowest loss is at its smallest or largest size, smallest budget first."""
    labels, values = isoflop.group_budgets(flops, budget)
    out = []
    for g in np.argsort(values):
        idx = np.flatnonzero(labels == g)
        x, y = isoflop._by_size(n[idx], loss[idx])
        if len(x) < MIN_SIZES:
            continue
        j = int(np.argmin(y))
        if 0 < j < len(x) - 1:
            continue
        step = float(np.exp((x[-1] - x[0]) / (len(x) - 1)))
        n_edge = float(np.exp(x[j]))
        # the run of the edge size with the lowest loss (seeds share a size)
        at = idx[np.isclose(np.log(n[idx]), x[j], atol=1e-8)]
        best = int(at[np.argmin(loss[at])])
        sign = 1 if j == len(x) - 1 else -1
        add = tuple(float(n_edge * step ** (sign * (i + 1))) for i in range(steps_to_add(len(x))))
        out.append(Edge(float(values[g]), "largest" if sign > 0 else "smallest", n_edge, float(y[j]),
                        None if runs is None else str(runs[best]), len(x), step, add))
    return out


def edges_of_table(table) -> list[Edge]:
    """`find_edges` on a RunTable (scaling.fit.table)."""
    return find_edges(table.col("params"), table.col("loss"), table.col("flops"),
                      table.col("budget") if table.has("budget") else None,
                      table.df["run"].to_list() if table.has("run") else None)


def edge_lines(edges: list[dict], params_column: str = "params") -> list[str]:
    """What `scaling fit` prints about edge budgets (records' dicts, as in fit.json). N is the
    fit's, from `params_column`: where that is not a sweep file's total N, the line says so."""
    if not edges:
        return []
    which = "" if params_column == "params" else (
        f" in a sweep file's total N; N below is column {params_column!r}")
    out = ["", f"Budgets whose lowest loss is at an edge of their sizes ({len(edges)}): the optimum lies "
               f"beyond the sizes tried (`scaling sweep extend` writes the runs to add{which}):"]
    return out + [f"  {Edge.from_dict(e).line()}" for e in edges]

