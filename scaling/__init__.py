"""Compute-optimal scaling laboratory for encoder-decoder Transformers.

Data flows one way: corpus -> token shards -> runs -> results table -> fits -> plan and pictures.
"""

import os

# Before torch (and its OpenMP runtime) loads: idle threads sleep instead of spinning, so a
# run beside other work does not burn the cores that work needs (see scaling/threads.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Jobs pickled under release 0.1's module paths still load (scaling/moved.py).
from scaling import moved as _moved  # noqa: E402

_moved.install()
