"""Intervals every report uses: the Student-t interval of a mean over seeds (:func:`mean_ci`), the Wilson interval
of a success rate (:func:`wilson`) and the percentile-bootstrap interval of a median (:func:`bootstrap_median`)."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["mean_ci", "wilson", "bootstrap_median"]


def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of the two-sided Student-t interval (NaNs dropped).

    Returns (mean, half_width, n); half_width is NaN with fewer than two finite values and 0 when
    all values are equal (a deterministic quantity, e.g. a baseline computed once).
    """
    v = np.asarray(list(values), float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(v[0]), float("nan"), 1
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)
    return float(v.mean()), float(half), n


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k / n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(max(0.0, c - h)), float(min(1.0, c + h)))


def bootstrap_median(x, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(median, 2.5%, 97.5%) percentile-bootstrap interval of the median."""
    x = np.asarray(x, float)
    if x.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(x, (n_boot, x.size)), axis=1)
    return (float(np.median(x)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5)))
