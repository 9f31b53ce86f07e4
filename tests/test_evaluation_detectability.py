"""Detectability (classifier two-sample test): two halves of one real set cannot be told apart,
a visibly altered copy can, and the result is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conditioning.dataset import load_dataset
from generation.evaluation.detectability import (
    DetectabilityConfig,
    auroc,
    detectability,
    matched_pairs,
)
from generation.evaluation.images import ImageSet, load_split
from tests.conftest import make_tiny_dataset

CONFIG = DetectabilityConfig(epochs=4, n_boot=200)


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    data = load_dataset(make_tiny_dataset(tmp_path_factory.mktemp("c2st") / "data", per_class=90))
    train = load_split(data, "train")
    order = np.random.default_rng(0).permutation(len(train))
    return data.schema, train.subset(order[::2]), train.subset(order[1::2])


def test_auroc_counts_ties_half():
    assert auroc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(auroc(np.array([0.5, 0.5]), np.array([1, 1])))


def test_matched_pairs_gives_equal_counts_per_class(halves):
    _, a, b = halves
    real = a.subset([i for i, v in enumerate(a.values("pathology")) if v != "viral"][:50])
    ri, si = matched_pairs(real, b, "pathology", cap=10_000, seed=0)
    assert len(ri) == len(si)
    for value in ("normal", "bacterial", "viral"):
        assert [real.values("pathology")[i] for i in ri].count(value) == [
            b.values("pathology")[i] for i in si
        ].count(value)
    assert "viral" not in {b.values("pathology")[i] for i in si}  # nothing real to match


def test_two_halves_of_one_real_set_are_indistinguishable(halves):
    schema, a, b = halves
    result = detectability(a, b, schema, CONFIG)
    assert result["n_real"] == result["n_synthetic"] >= 80
    assert abs(result["auroc"] - 0.5) < 0.2
    low, high = result["interval"]
    assert low <= result["auroc"] <= high
    assert set(result["per_class"]) == {"normal", "bacterial", "viral"}


def test_an_altered_copy_is_detected_overall_and_per_class(halves):
    schema, a, b = halves
    smoothed = np.stack([gaussian_filter(x, 1.0) for x in b.images]).astype(np.float32)
    altered = ImageSet(smoothed, b.conditions, b.ids)
    result = detectability(a, altered, schema, CONFIG)
    assert result["auroc"] > 0.9
    assert all(row["auroc"] > 0.8 for row in result["per_class"].values())
    again = detectability(a, altered, schema, CONFIG)
    assert again["auroc"] == result["auroc"]  # same data and seed, same answer


def test_reconstruction_check_tells_a_blurring_autoencoder_from_a_perfect_one(halves):
    from generation.evaluation.sharpness import reconstruction_check

    schema, a, _ = halves
    perfect = reconstruction_check(a, lambda x: x.copy(), schema, CONFIG)
    assert perfect["high_frequency_power_kept"] == pytest.approx(1.0)
    assert perfect["l1"] == 0.0 and abs(perfect["detectability"]["auroc"] - 0.5) < 0.2
    blurry = reconstruction_check(
        a, lambda x: np.stack([gaussian_filter(i, 1.0) for i in x]), schema, CONFIG
    )
    assert blurry["high_frequency_power_kept"] < 0.5
    assert blurry["detectability"]["auroc"] > 0.9
