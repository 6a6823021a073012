"""The end-to-end sweep's inputs (docs/e2e-notes.md): the outside corpus is the same text each
time and big enough, and the sweep files expand to the runs the notes measured."""

from __future__ import annotations

import json
import math
from pathlib import Path

from e2e_corpus import build_documents, write_corpus
from scaling.sweep.spec import load_sweep

HERE = Path(__file__).resolve().parent / "data" / "e2e"


def test_corpus_is_deterministic_prose_of_several_megabytes(tmp_path):
    a = write_corpus(tmp_path / "a.jsonl")
    docs = [json.loads(line)["text"] for line in a.read_text().splitlines()]
    assert docs == build_documents()  # a second build from scratch gives the same documents
    # ~3 MB in ~4.5K documents on 3.11.7; other versions of the library differ a little.
    assert len(docs) > 2000 and sum(map(len, docs)) > 2_000_000
    assert all(len(d) >= 100 for d in docs)  # pieces of 150 characters and more; the topics are longer


def _runs(name: str) -> dict[str, tuple[float, int]]:
    return {r.name: (r.budget, r.n_params) for r in load_sweep(HERE / name).runs}


def test_offcentre_extensions_continue_its_spacing_into_the_same_sweep():
    off, ext, ext2 = _runs("offcentre.toml"), _runs("extension.toml"), _runs("extension2.toml")
    assert len(off) == 12 and len(ext) == 6 and len(ext2) == 2
    assert not (set(off) & set(ext)) and not (set(off) | set(ext)) & set(ext2)
    names = {load_sweep(HERE / f).name for f in ("offcentre.toml", "extension.toml", "extension2.toml")}
    assert names == {"e2e"}  # one sweep directory: launch merges them
    for budget in (1e11, 2e11, 4e11):
        sizes = sorted(n for b, n in off.values() if b == budget)
        ratio = (sizes[-1] / sizes[0]) ** (1 / (len(sizes) - 1))
        added = sorted(n for b, n in ext.values() if b == budget)
        # Each added size is the next step of the sweep's ratio, within the shapes' granularity.
        for step, n in enumerate(added, start=1):
            assert abs(math.log(n / (sizes[-1] * ratio**step))) < math.log(1.1)
    assert {b for b, _ in ext2.values()} == {4e11}


def test_centred_sweep_brackets_the_measured_optimum_at_every_budget():
    runs = _runs("centred.toml")
    # docs/e2e-notes.md: the optimum sits at 48K (1e11), 48-69K (2e11), 94K (4e11) on seeds 0 and 1.
    optimum = {1e11: 48_256, 2e11: 69_280, 4e11: 93_888}
    for budget, best in optimum.items():
        sizes = sorted(n for b, n in runs.values() if b == budget)
        assert len(sizes) == 5 and sizes[0] < best < sizes[-1] and best in sizes
