"""New runs for a sweep directory, as `scaling design` proposes them: the models the sweep's own
size rule builds (so that a candidate's N and FLOPs per token are those of the run it would
be), and the chosen (budget, size) pairs written as a sweep file to launch into the same
directory, the way `scaling sweep extend` writes one (`extend.sweep_doc`: same [sweep] name and
directory, same [train], [executor], [slurm]; [isoflop] with one list of sizes per budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from scaling.base.config import TrainConfig, format_count, read_toml
from scaling.base.errors import UserError
from scaling.jobs.ledger import LEDGER, load_ledger
from scaling.sweep.extend import SWEEP_FILE, Extension, write_checked, sweep_doc, to_toml
from scaling.sweep.spec import format_budget, model_stats


@dataclass(frozen=True)
class Model:
    """A size target of the sweep's size rule and the model it builds."""

    target: int
    n_params: int
    n_params_nonembed: int
    flops_per_token: float


@dataclass
class Template:
    """A launched sweep directory: its ledger, the sweep file launched there, the base config
    its runs share, and the vocabulary the models are sized for."""

    dir: Path
    ledger: object
    doc: dict
    config: TrainConfig
    vocab: int | None

    def models(self, lo: float, hi: float, per_decade: int = 10) -> list[Model]:
        """The distinct models of size targets log-spaced over [lo, hi] (total parameters);
        targets too small to build are left out (small sizes share shapes: each kept once)."""
        out, seen = [], set()
        steps = max(1, int(math.ceil(per_decade * math.log10(max(hi / lo, 1.0001)))))
        for x in np.geomspace(lo, hi, steps + 1):
            target = int(float(f"{x:.2g}"))
            try:
                n, n_ne, fpt = model_stats(replace(self.config, params=format_count(target)), self.vocab)
            except UserError:
                continue
            if (n, n_ne) not in seen:
                seen.add((n, n_ne))
                out.append(Model(target, n, n_ne, fpt))
        return out

    def trains(self, model: Model, budget: float) -> bool:
        """Whether the budget buys the model at least one batch of tokens."""
        return budget / model.flops_per_token >= self.config.tokens_per_step

    def candidates(self, budgets, n_opt, spread: float = 4.0, nonembed: bool = False) -> list[tuple]:
        """(N, D, C, (budget, target)) of each run worth considering: at each budget, the
        sweep's models whose N (non-embedding where the law's is) lies within n_opt / spread ..
        n_opt x spread of that budget's optimum, that the budget buys a batch, and that the
        sweep does not hold yet. D = C / FLOPs per token, before whole batches."""
        lo, hi = min(n_opt) / spread, max(n_opt) * spread
        # Size targets are total parameters: with a non-embedding N, search higher, the
        # window below keeps what fits.
        models = self.models(lo, hi * (20 if nonembed else 1))
        out = []
        for c, opt in zip(budgets, n_opt):
            for m in models:
                n = m.n_params_nonembed if nonembed else m.n_params
                if opt / spread <= n <= opt * spread and self.trains(m, c) and not self.has_run(c, m):
                    out.append((float(n), c / m.flops_per_token, float(c), (float(c), m.target)))
        return out

    def has_run(self, budget: float, model: Model) -> bool:
        """Whether the sweep already holds this run (same name as a new one would take)."""
        return f"C{format_budget(budget)}-N{format_count(model.target)}" in self.ledger.runs


def load_template(dir: str | Path) -> Template | None:
    """The sweep directory `dir`, or None if it is not one (no ledger or no sweep file)."""
    dir = Path(dir)
    ledger = load_ledger(dir)
    if ledger is None or not (dir / SWEEP_FILE).exists():
        return None
    doc = read_toml(dir / SWEEP_FILE, "sweep file")
    vocab = (doc.get("sweep") or {}).get("vocab_size")
    entry = next(iter(ledger.runs.values()), None)
    if entry is None:
        raise UserError(f"{dir / LEDGER}: the sweep has no runs to take the training settings from")
    config = TrainConfig.from_dict({k: v for k, v in entry.config.items() if k != "out"})
    return Template(dir, ledger, doc, config, vocab)


def write(t: Template, runs: list[tuple[float, int]], out: str | Path, header: str) -> Extension:
    """The sweep file of `runs` ((budget, size target) pairs), checked by expanding it (every
    run must be new to the sweep) before it is moved into place."""
    if t.ledger.kind != "isoflop":
        raise UserError(f"{t.dir}: holds a {t.ledger.kind} sweep; the proposed runs are written as IsoFLOP "
                        "budgets, which an IsoFLOP sweep takes (write them as a table instead: -o runs.csv)")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"-o {out}: is a directory; give the sweep file to write (e.g. {out / 'design.toml'})")
    by_budget: dict[float, list[str]] = {}
    for budget, target in runs:
        by_budget.setdefault(float(budget), []).append(format_count(target))
    budgets = sorted(by_budget, reverse=True)       # largest first: runs start in file order
    doc = sweep_doc(t.dir, t.ledger, t.doc, out, budgets, [by_budget[b] for b in budgets],
                    f"runs chosen by scaling design for {t.dir}")
    ext = Extension(out, t.dir)
    write_checked(out, to_toml(doc, header), t.ledger, ext)
    return ext
