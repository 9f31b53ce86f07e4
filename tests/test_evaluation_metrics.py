"""Evaluation metrics on constructed inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conditioning.bootstrap import bootstrap_interval
from generation.evaluation.metrics import (
    age_band,
    classification_metrics,
    frechet_distance,
    frechet_interval,
    knn_radii,
    ms_ssim,
    ms_ssim_diversity,
    precision_recall,
    random_pairs,
    regression_metrics,
)


@pytest.fixture
def gaussian():
    rng = np.random.default_rng(0)
    return rng.normal(size=(400, 8)), rng.normal(size=(400, 8))


def test_frechet_distance_zero_for_identical_sets_and_grows_with_shift(gaussian):
    a, b = gaussian
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    same_distribution = frechet_distance(a, b)
    shifted = frechet_distance(a, b + 2.0)
    assert same_distribution < 0.5
    # a mean shift of 2 in each of 8 dims adds |mu|^2 = 32
    assert shifted == pytest.approx(same_distribution + 32.0, rel=0.1)


def test_frechet_interval_covers_the_true_distance_and_narrows_with_more_images(gaussian):
    a, b = gaussian
    low, high = frechet_interval(a, b + 2.0, n_boot=60)
    assert low < frechet_distance(a, b + 2.0) < high
    assert 28.0 < low and high < 40.0  # around 32, the FD of a shift of 2 in each of 8 dims
    small_low, small_high = frechet_interval(a[:50], b[:50] + 2.0, n_boot=60)
    assert small_high - small_low > 2 * (high - low)
    assert frechet_interval(a, b + 2.0, n_boot=60) == (low, high)  # seeded


def test_frechet_interval_holds_its_own_estimate_where_resampling_inflates_the_distance(gaussian):
    # two small samples of one distribution: resamples with replacement repeat images, so every
    # bootstrap FD lies above the estimate and a plain percentile interval would exclude it
    a, b = gaussian
    point = frechet_distance(a[:40], b[:40])
    plain_low, _ = bootstrap_interval(frechet_distance, (a[:40], b[:40]), n_boot=60)
    assert plain_low > point  # the failure this guards against
    low, high = frechet_interval(a[:40], b[:40], n_boot=60)
    assert low <= point <= high


def test_frechet_distance_rejects_mismatched_features(gaussian):
    a, _ = gaussian
    with pytest.raises(ValueError, match="dims differ"):
        frechet_distance(a, a[:, :4])


def test_knn_radii_exclude_the_point_itself():
    points = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    assert knn_radii(points, 1).tolist() == [1.0, 1.0, 1.0, 1.0, 7.0]
    assert knn_radii(points, 2).tolist() == [2.0, 1.0, 1.0, 2.0, 8.0]


def test_precision_recall_identical_disjoint_and_mode_dropping(gaussian):
    a, _ = gaussian
    assert precision_recall(a, a) == {"precision": 1.0, "recall": 1.0}
    disjoint = precision_recall(a, a + 100.0)
    assert disjoint == {"precision": 0.0, "recall": 0.0}
    # real data has two far-apart modes; the synthetic set reproduces only one of them
    rng = np.random.default_rng(1)
    real = np.concatenate([rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 50.0])
    one_mode = rng.normal(size=(200, 4))
    pr = precision_recall(real, one_mode)
    assert pr["precision"] > 0.9
    assert 0.4 < pr["recall"] < 0.55


def test_ms_ssim_identical_images_is_one_and_noise_is_diverse():
    rng = np.random.default_rng(0)
    images = rng.random((6, 64, 64)).astype(np.float32)
    assert np.allclose(ms_ssim(images, images), 1.0, atol=1e-5)
    assert ms_ssim_diversity(np.repeat(images[:1], 5, axis=0), n_pairs=10) == pytest.approx(
        1.0, abs=1e-5
    )
    assert ms_ssim_diversity(images, n_pairs=15) < 0.3
    assert math.isnan(ms_ssim_diversity(images[:1]))


def test_ms_ssim_small_images_and_errors():
    rng = np.random.default_rng(0)
    small = rng.random((3, 16, 16)).astype(np.float32)
    assert np.allclose(ms_ssim(small, small), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="at least 16 px"):
        ms_ssim(small[:, :8, :8], small[:, :8, :8])


def test_random_pairs_never_pair_an_image_with_itself():
    pairs = random_pairs(5, 1000, seed=0)
    assert len(pairs) == 10  # all distinct pairs when fewer than asked
    many = random_pairs(100, 500, seed=0)
    assert len(many) == 500 and (many[:, 0] != many[:, 1]).all()


def test_classification_metrics_perfect_reversed_and_unknown_labels():
    labels = np.array([0, 1, 2, 0, 1, 2, -1])
    perfect = np.eye(3)[np.array([0, 1, 2, 0, 1, 2, 0])]
    m = classification_metrics(perfect, labels, ["a", "b", "c"])
    assert m["n"] == 6 and m["accuracy"] == 1.0 and m["macro_auroc"] == 1.0
    assert m["per_class"]["b"] == {"n": 2, "recall": 1.0, "auroc": 1.0}
    wrong = (1.0 - np.eye(3)[np.maximum(labels, 0)]) / 2  # the true class scores lowest
    w = classification_metrics(wrong, labels, ["a", "b", "c"])
    assert w["accuracy"] == 0.0 and w["macro_auroc"] == 0.0
    only_one_class = classification_metrics(perfect[:1], labels[:1], ["a", "b", "c"])
    assert only_one_class["accuracy"] == 1.0 and math.isnan(only_one_class["macro_auroc"])


def test_regression_mae_ignores_unknown_targets():
    m = regression_metrics(np.array([10.0, 20.0, 30.0]), [12.0, None, 26.0])
    assert m == {"n": 2, "mae": pytest.approx(3.0)}
    assert math.isnan(regression_metrics(np.array([1.0]), [None])["mae"])


def test_age_bands():
    assert [age_band(v) for v in (0, 11.9, 12, 59, 60, 150, None)] == [
        "0-1y",
        "0-1y",
        "1-5y",
        "1-5y",
        "5-12y",
        "12y+",
        None,
    ]
