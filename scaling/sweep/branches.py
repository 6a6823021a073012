"""Branching sweeps (`[sweep] branches = true`, schedule wsd): one trunk per size, branches off it.

A WSD run's lr does not depend on its length until its cooldown starts, so the runs of one size
(same model, batch, seed and settings; only D differs) share everything up to there. The
longest of them is the trunk: a run like any other (its own D, its own cooldown) that also
keeps a checkpoint at the step where each shorter run's cooldown starts (`branch_steps`). Each
shorter run is a branch: with no checkpoint of its own, it starts from the trunk's at that step
(`branch_from`, scaling/train/resume.py) and trains only its cooldown. A branch is bit for bit
the run a from-scratch WSD run of its length would be: the same warmup (fixed here per size,
`warmup_steps`, from the shortest run's steps), lr, data order (example i is a pure function of
(seed, i)) and optimizer state at the branch point.

Torch-free, and no import of spec.py (which calls it): runs are RunSpecs, changed with replace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from scaling.base.errors import UserError
from scaling.train.schedule import branch_step, run_steps, warmup_steps


def _family(cfg) -> str:
    """What runs of one trunk share: the identity but for the token budget."""
    d = cfg.identity()
    d.pop("tokens")
    return json.dumps(d, sort_keys=True, default=str)


def branch_runs(where: str, runs: list) -> list:
    """The sweep's runs as trunks and branches: within each family (`_family`) the longest run
    is the trunk, every shorter one a branch of it. Returns the runs in their order, each with
    its family's warmup; trunks with `branch_steps`, branches with `trunk` and `branch_step`."""
    families: dict[str, list] = {}
    for r in runs:
        if r.config.schedule != "wsd":
            raise UserError(f"{where}: branches = true needs train.schedule = \"wsd\" (a branch is a cooldown "
                            f"from a constant lr), got {r.config.schedule!r}")
        families.setdefault(_family(r.config), []).append(r)
    out = {}
    for members in families.values():
        members = sorted(members, key=lambda r: r.tokens, reverse=True)
        # One warmup for the family, the shortest run's: each run warms up as a run of that
        # length would, and every branch point lies past it.
        shortest = min(members, key=lambda r: r.tokens).config
        warmup = warmup_steps(shortest, run_steps(shortest))
        trunk, *branches = [replace(r, config=replace(r.config, warmup_steps=warmup)) for r in members]
        points = []
        for b in branches:
            step = branch_step(b.config)
            if step < warmup:
                raise UserError(f"{where}: run {b.name}'s cooldown would start at step {step}, inside its "
                                f"{warmup} warmup steps; give it more tokens or a smaller cooldown_frac")
            points.append(step)
            out[b.name] = replace(b, trunk=trunk.name, branch_step=step)
        out[trunk.name] = replace(trunk, config=replace(trunk.config, branch_steps=tuple(sorted(set(points)))))
    return [out[r.name] for r in runs]


@dataclass(frozen=True)
class BranchedCompute:
    """What a branched sweep trains against the same points from scratch (FLOPs)."""

    branched: float
    scratch: float
    trunks: int
    branches: int

    @property
    def saved(self) -> float:
        return 1 - self.branched / self.scratch if self.scratch else 0.0


def trained_share(r) -> float:
    """The share of its steps a run trains itself: a branch only its cooldown (from its branch
    step on), any other run all of them."""
    if not getattr(r, "trunk", None):
        return 1.0
    steps = run_steps(r.config)
    return (steps - r.branch_step) / steps


def branched_compute(runs: list) -> BranchedCompute:
    """A trunk trains all its steps, a branch only its cooldown; from scratch every run trains
    all of its own."""
    branched = sum(r.flops * trained_share(r) for r in runs)
    branches = sum(1 for r in runs if getattr(r, "trunk", None))
    return BranchedCompute(branched, sum(r.flops for r in runs), len(runs) - branches, branches)
