"""Resource keys of a sweep file that depend on the run: tables by size, and time limits.

A key of `[executor]` or `[slurm]` may be a table from model size to value instead of one
value, so that small runs ask for little:

    [executor]
    gpus_per_node = { "0" = 1, "300M" = 4, "1B" = 8 }     # from 0: 1 GPU; from 300M: 4; from 1B: 8
    time = { "0" = "02:00:00", "1B" = "1-00:00:00" }

Each run takes the entry of the largest size at or below its parameter count N (all its
parameters, `sweep plan`'s N column); a run smaller than every size in a table is refused,
so a table usually starts at "0". spec.py reads the sections once per distinct set of values,
so every entry is checked as a plain value would be. `time` is Slurm's: minutes, or
"HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS" (a two-part "A:B" is refused: Slurm reads it as
minutes:seconds, a reader as hours:minutes).
"""

from __future__ import annotations

import math
import re
from typing import Any

from scaling.base.config import format_count, parse_count
from scaling.base.errors import UserError
from scaling.jobs.executors import SBATCH_OPTIONS

# Keys that may be a table by size. Not: the executor's name, parallelism (one per sweep),
# setup lines or `extra` (a table already).
BY_SIZE = {
    "executor": {"cpus_per_task", "gpus_per_node", "tasks_per_node", "nodes", "mem_gb", "gpu_mem_gb", "time", "time_min",
                 "achieved_flops", "max_tokens_per_s", "overhead_s"},
    "slurm": {"partition", "account", "qos", "constraint", "signal_delay_s", "max_num_timeout", *SBATCH_OPTIONS},
}


def size_tables(path, section: str, table: Any) -> dict[str, list[tuple[int, Any]]]:
    """key -> [(from size, value), ...] ascending, for the keys of `table` given by size."""
    if not isinstance(table, dict):
        return {}
    out = {}
    for key, value in table.items():
        if not isinstance(value, dict) or key in ("extra",):
            continue
        where = f"{path}: {section}.{key}"
        if key not in BY_SIZE.get(section, set()):
            continue   # not a by-size key: the section's own check names the wrong type
        if not value:
            raise UserError(f"{where}: a table by size must not be empty")
        steps = []
        for size, v in value.items():
            try:
                n = 0 if str(size).strip() == "0" else parse_count(size, f"{where}.{size!r}")
            except UserError as e:
                raise UserError(f"{e} (a table by size maps sizes like \"0\", \"300M\", \"1B\" to values)") from None
            if isinstance(v, dict):
                raise UserError(f"{where}.{size!r} must be a value, got a table")
            steps.append((n, v))
        out[key] = sorted(steps, key=lambda s: s[0])
    return out


def at_size(table: dict, tables: dict[str, list[tuple[int, Any]]], n_params: int | None, where: str) -> dict:
    """`table` with each by-size key's value for a run of n_params (None: the smallest entry)."""
    out = dict(table)
    for key, steps in tables.items():
        if n_params is None:
            out[key] = steps[0][1]
            continue
        fit = [v for n, v in steps if n <= n_params]
        if not fit:
            raise UserError(f"{where}.{key}: no entry for {format_count(n_params)} parameters: the table starts "
                            f"at {format_count(steps[0][0])}; add \"0\" = ... for the smallest runs")
        out[key] = fit[-1]
    return out


def variants(table: dict, tables: dict[str, list[tuple[int, Any]]]):
    """`table` once with each entry of each by-size key (the others at their smallest): every
    value is checked, also those no run of this sweep takes."""
    base = at_size(table, tables, None, "")
    for key, steps in tables.items():
        for n, v in steps:
            yield key, n, {**base, key: v}


_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def minutes(where: str, value: Any) -> int:
    """A Slurm time limit in whole minutes (seconds round up): 90, "90", "01:30:00", "1-12",
    "1-12:30", "1-12:30:00"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(f"{where} must be minutes or \"HH:MM:SS\", got {value!r}")
    if isinstance(value, int):
        return value
    s = value.strip()
    m = _CLOCK.match(s)
    if not m:
        raise UserError(f"{where} must be minutes or \"HH:MM:SS\" / \"D-HH:MM:SS\", got {value!r}")
    days, a, b, c = m.groups()
    if days is None and b is not None and c is None:
        raise UserError(f"{where} = {value!r} is ambiguous (Slurm reads it as minutes:seconds); "
                        f"write \"{a}:{b}:00\" for hours:minutes or {int(a)} for minutes")
    if days is not None:   # D-HH, D-HH:MM, D-HH:MM:SS
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif b is None:        # minutes
        secs = int(a) * 60
    else:                  # HH:MM:SS
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    return math.ceil(secs / 60)
