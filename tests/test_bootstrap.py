"""The shared bootstrap (conditioning/bootstrap.py, scipy.stats.bootstrap underneath) on cases
whose answer is known from the textbook."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conditioning.bootstrap import bootstrap_interval, resample


def test_interval_of_a_normal_mean_covers_it_with_the_textbook_width():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, 400)
    low, high = bootstrap_interval(np.mean, (x,), n_boot=2000, seed=0)
    assert low < 5.0 < high
    textbook = 2 * 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # mean +- 1.96 standard errors
    assert high - low == pytest.approx(textbook, rel=0.10)
    assert low == pytest.approx(x.mean() - textbook / 2, abs=0.1 * textbook)
    assert bootstrap_interval(np.mean, (x,), n_boot=2000, seed=0) == (low, high)  # seeded
    assert bootstrap_interval(np.mean, (x,), n_boot=2000, seed=1) != (low, high)


def test_interval_of_a_difference_of_means_resamples_each_sample_on_its_own():
    rng = np.random.default_rng(4)
    a, b = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 3.0, 500)
    low, high = bootstrap_interval(lambda p, q: p.mean() - q.mean(), (a, b), n_boot=2000)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))  # Welch's standard error
    assert low < 1.0 < high
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.10)


def test_rows_are_resampled_whole_and_a_vector_statistic_gets_one_interval_each():
    rng = np.random.default_rng(5)
    rows = rng.normal([0.0, 10.0], [1.0, 4.0], size=(400, 2))  # observations are feature rows
    draws = resample(lambda r: r.mean(axis=0), (rows,), n_boot=1000, seed=0)
    assert draws.values.shape == (2, 1000)
    se = rows.std(axis=0, ddof=1) / math.sqrt(len(rows))
    assert draws.high - draws.low == pytest.approx(2 * 1.96 * se, rel=0.10)
    assert draws.low[0] < 0.0 < draws.high[0] and draws.low[1] < 10.0 < draws.high[1]


def test_a_shared_index_resamples_two_arrays_together():
    # two arrays equal row by row: resampled by one index their difference is always zero,
    # resampled apart it would spread
    x = np.random.default_rng(6).normal(size=200)
    index = np.arange(len(x))
    together = resample(lambda i: x[i].mean() - x[i].mean(), (index,), n_boot=200)
    assert np.all(together.values == 0.0)
    apart = resample(lambda p, q: p.mean() - q.mean(), (x, x), n_boot=200)
    assert apart.high - apart.low > 0.1


def test_a_sample_of_one_is_held_and_nan_draws_can_be_left_out():
    rng = np.random.default_rng(7)
    x = rng.normal(size=100)
    held = resample(lambda one, many: one[0] + many.mean(), (np.array([10.0]), x), n_boot=500)
    assert 10.0 + x.mean() - 0.3 < held.low < 10.0 + x.mean() < held.high < 10.0 + x.mean() + 0.3
    alone = resample(np.mean, (np.array([2.0]),), n_boot=10)
    assert alone.values.tolist() == [2.0] * 10 and alone.low == alone.high == 2.0

    def positive_first(s):  # undefined (NaN) in the draws that start with a negative value
        return s.mean() if s[0] > 0 else math.nan

    kept = resample(positive_first, (x,), n_boot=500, omit_nan=True)
    assert 0 < np.isnan(kept.values).sum() < 500
    assert kept.low < x.mean() < kept.high
    with pytest.warns(Warning):
        plain = resample(positive_first, (x,), n_boot=500)
    assert math.isnan(plain.low)
