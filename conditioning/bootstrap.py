"""Bootstrap intervals by `scipy.stats.bootstrap`: shared by the evaluation (FD, utility gains)
and the privacy audit (AUCs, shares), which sit beside each other and so meet only down here.

Every interval here is a 95% **percentile** interval (`method="percentile"`): the 2.5th and
97.5th percentiles of the statistic over `n_boot` resamples, each sample resampled
independently with replacement, from a generator seeded with `seed`. scipy resamples the
observation indices of each sample, so a sample may hold vectors (feature rows) as well as
scalars; a statistic may return one number or a 1-D array of them (one interval each)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
INDEX_BUDGET = 4_000_000  # resampled indices held at once (scipy's `batch`), about 32 MB


@dataclass(frozen=True)
class Draws:
    """The bootstrap distribution (`values`, the resamples along the last axis) and its 95%
    percentile interval (`low`, `high`: floats, or arrays for a vector statistic)."""

    values: np.ndarray
    low: np.ndarray | float
    high: np.ndarray | float


def resample(
    statistic, samples: tuple, n_boot: int = 1000, seed: int = 0, omit_nan: bool = False
) -> Draws:
    """`statistic(*resampled_samples)` on `n_boot` resamples by `scipy.stats.bootstrap`.

    Each sample (an array, observations along its first axis) is resampled independently with
    replacement; to resample observations of two arrays together, pass their shared index
    (`np.arange(n)`) as one sample and index both arrays with it inside the statistic. A sample
    of fewer than two observations is held as it is (its only resample is itself; scipy
    refuses to resample it). With `omit_nan`, draws where the statistic is NaN (say a class
    absent from a resample) are left out of the percentiles rather than making them NaN."""
    from scipy.stats import DegenerateDataWarning, bootstrap, quantile

    samples = tuple(np.asarray(s) for s in samples)
    varying = [k for k, s in enumerate(samples) if len(s) >= 2]

    def on_indices(*drawn):
        chosen = list(samples)
        for k, index in zip(varying, drawn, strict=True):
            chosen[k] = samples[k][index]
        return statistic(*chosen)

    if not varying:  # nothing to resample: every draw is the statistic itself
        value = np.asarray(statistic(*samples), dtype=np.float64)
        values = np.repeat(value[..., None], n_boot, axis=-1)
        return Draws(values, value[()], value[()])
    total = sum(len(samples[k]) for k in varying)
    with warnings.catch_warnings():
        if omit_nan:  # scipy warns of NaN percentiles; they are read below without the NaNs
            warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(
            [np.arange(len(samples[k])) for k in varying],
            on_indices,
            n_resamples=n_boot,
            batch=max(1, min(n_boot, INDEX_BUDGET // total)),
            vectorized=False,
            paired=False,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    values = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    if omit_nan:
        tail = (1 - CONFIDENCE) / 2
        low, high = np.moveaxis(
            quantile(values, np.array([tail, 1 - tail]), axis=-1, nan_policy="omit"), -1, 0
        )
        return Draws(values, low[()], high[()])
    interval = result.confidence_interval
    return Draws(values, interval.low, interval.high)


def bootstrap_interval(
    statistic, samples: tuple[np.ndarray, ...], n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of a scalar statistic, each array resampled
    independently (scipy.stats.bootstrap, method="percentile")."""
    draws = resample(statistic, samples, n_boot, seed)
    return (float(draws.low), float(draws.high))
