"""Module paths of release 0.1, kept importable for one release.

Jobs already submitted were pickled with the classes' old paths (`scaling.sweep.jobs.TrainJob`
and the modules its state names); a requeued or still-pending job unpickles them after an
upgrade. A finder at the END of `sys.meta_path` answers only for these old names, after every
real module was looked for, and hands back the module that now holds the code: nothing is
imported twice, and ordinary imports never reach it. Remove in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old path (0.1) -> where the code lives now
MOVED = {
    "scaling.errors": "scaling.base.errors",
    "scaling.config": "scaling.base.config",
    "scaling.shapes": "scaling.base.shapes",
    "scaling.cost": "scaling.base.cost",
    "scaling.rundir": "scaling.base.rundir",
    "scaling.threads": "scaling.base.threads",
    "scaling.signals": "scaling.base.signals",
    "scaling.fit.interval": "scaling.base.intervals",
    "scaling.corpus": "scaling.data.corpus",
    "scaling.tokenizer": "scaling.data.tokenizer",
    "scaling.objectives": "scaling.data.objectives",
    "scaling.model": "scaling.train.model",
    "scaling.distributed": "scaling.train.distributed",
    "scaling.inference": "scaling.plan.inference",
    "scaling.sweep.jobs": "scaling.jobs.job",
    "scaling.sweep.ledger": "scaling.jobs.ledger",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])   # the module itself, under its old name too

    def exec_module(self, module):
        pass   # already executed under its new name


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
