"""Which chunks of a scored set (validation examples, a task's rows) each rank of a run scores,
one owner for both: rank r scores chunks r, r + W, ..., so the sums over ranks are the same
whatever the world size W.

Lockstep (a sharded model: every forward pass gathers weights from all ranks) makes every rank
run as many passes, ceil(chunks / W): a rank out of chunks re-runs chunk 0 and counts nothing.
Without it, a rank with fewer chunks would move on to the next collective (the all_reduce of
the sums) while another still waits in a gather, and both would wait forever.
"""

from __future__ import annotations

from collections.abc import Iterator


def rank_chunks(n: int, chunk: int, rank: int = 0, world: int = 1, lockstep: bool = False) -> Iterator[tuple[int, bool]]:
    """(start, counts) of each forward pass this rank makes over items 0..n-1 in chunks of
    `chunk` (the chunk is items start .. min(n, start + chunk) - 1); a pass that does not count
    (lockstep only) is a spare run of chunk 0."""
    starts = range(rank * chunk, n, chunk * world)
    passes = -(-(-(-n // chunk)) // world) if lockstep else len(starts)   # ceil(ceil(n / chunk) / world)
    for i in range(passes):
        yield (starts[i], True) if i < len(starts) else (0, False)
