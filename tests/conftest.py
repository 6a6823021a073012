"""Fixtures every test module may use."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shards():
    """The tests' tiny byte-level shards of real English (sweep_files.tiny_shards), built once
    per session and only read."""
    from sweep_files import tiny_shards

    d = Path(tempfile.mkdtemp(prefix="scaling-test-data-"))
    yield tiny_shards(d / "shards")
    shutil.rmtree(d, ignore_errors=True)
