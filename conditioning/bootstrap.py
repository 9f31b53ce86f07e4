"""Percentile bootstrap intervals: shared by the evaluation (FD) and the privacy audit (AUCs,
shares), which sit beside each other and so meet only down here."""

from __future__ import annotations

import numpy as np


def bootstrap_interval(
    statistic, samples: tuple[np.ndarray, ...], n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval, resampling each array independently."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        values.append(statistic(*(a[rng.integers(0, len(a), len(a))] for a in samples)))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return (float(lo), float(hi))
