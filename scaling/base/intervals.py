"""The 95% percentile interval every bootstrap in the project reports (fits, plans, tuned
rules, figure bands): one definition, so a report's numbers and its pictures agree."""

from __future__ import annotations

import numpy as np

CI = (2.5, 97.5)   # percentiles of a 95% interval


def percentile_interval(samples, min_samples: int = 2) -> list:
    """[lo, hi] of the finite samples, or [None, None] with fewer than min_samples of them."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if s.size < min_samples:
        return [None, None]
    lo, hi = np.percentile(s, CI)
    return [float(lo), float(hi)]


def percentile_band(ys: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise interval of many curves (rows), NaNs ignored: a figure's shaded band."""
    lo, hi = np.nanpercentile(ys, CI, axis=axis)
    return lo, hi
