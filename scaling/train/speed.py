"""The speed monitor's yardstick: the peak FLOP/s of the device a run trains on, against which
RunRecorder's metrics rows report MFU (model FLOPs utilisation).

On a GPU the peak is the vendor's dense bf16 figure (scaling/base/cost.py's one table); on a
CPU it is measured, once per machine and thread count, and cached.
"""

from __future__ import annotations

import json
import os
import platform
import time

import torch

from scaling.base.cost import PEAK_BF16, peak_bf16
from scaling.base.rundir import atomic_write_json
from scaling.data.corpus import cache_root

_cpu_peak_cache: dict[int, float] = {}


def measure_cpu_peak(seconds: float = 0.3) -> float:
    """fp32 matmul FLOP/s of this machine at torch's current thread count.

    Measured once per machine and thread count, on the best of several short trials, and
    kept in the cache ($SCALING_CACHE/cpu-peak.json): a peak re-measured at the start of
    each run beside other work reads low and makes MFU meaningless."""
    threads = torch.get_num_threads()
    if threads in _cpu_peak_cache:
        return _cpu_peak_cache[threads]
    key = f"{platform.processor() or platform.machine()}|{os.cpu_count()}|{threads}|{torch.__version__}"
    path = cache_root() / "cpu-peak.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = 0.0
        for _ in range(5):  # best of five: other work only ever makes a trial slower
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                a @ b
                reps += 1
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
        known[key] = best
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, known)
        except OSError:
            pass  # a read-only cache only costs a re-measurement next time
    _cpu_peak_cache[threads] = float(known[key])
    return _cpu_peak_cache[threads]


def device_peak(device: str, precision: str) -> tuple[float, str]:
    """(peak FLOP/s, device name) used for MFU."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = peak_bf16(name)
        if peak is not None:
            return (peak if "bf16" in precision else peak / 2), name
        return PEAK_BF16["H100"], name   # an unknown GPU: taken as an H100
    return measure_cpu_peak(), f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class SpeedMonitor:
    """Tokens per second and MFU between two metrics rows, against the device's peak."""

    def __init__(self, plan):
        self.plan = plan
        self.peak: float | None = None
        self.device_name: str | None = None
        self._t_last, self._step_last = time.monotonic(), 0

    def measure_peak(self, device: str, precision: str) -> None:
        self.peak, self.device_name = device_peak(device, precision)

    def restart(self, step: int) -> None:
        """Count from here (a start, or the end of a validation, which is not training time)."""
        self._t_last, self._step_last = time.monotonic(), step

    def since_last(self, step: int) -> dict:
        now = time.monotonic()
        dt, n = max(now - self._t_last, 1e-9), step - self._step_last
        self._t_last, self._step_last = now, step
        return {"tokens_per_s": n * self.plan.tokens_per_step / dt,
                "mfu": n * self.plan.flops_per_step / dt / self.peak if self.peak else float("nan")}

