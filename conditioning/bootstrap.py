"""Percentile bootstrap intervals: shared by the evaluation (FD) and the privacy audit (AUCs,
shares), which sit beside each other and so meet only down here."""

from __future__ import annotations

import numpy as np


def bootstrap_values(
    statistic, samples: tuple[np.ndarray, ...], n_boot: int = 1000, seed: int = 0
) -> np.ndarray:
    """The statistic on `n_boot` resamples, each array resampled independently with replacement."""
    rng = np.random.default_rng(seed)
    return np.array(
        [statistic(*(a[rng.integers(0, len(a), len(a))] for a in samples)) for _ in range(n_boot)]
    )


def bootstrap_interval(
    statistic, samples: tuple[np.ndarray, ...], n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval, resampling each array independently."""
    lo, hi = np.percentile(bootstrap_values(statistic, samples, n_boot, seed), [2.5, 97.5])
    return (float(lo), float(hi))
