"""Statistics and search pieces of the privacy audit, on data where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy_audit import stats
from privacy_audit.errors import AuditError
from privacy_audit.search import aligned_ncc, topk_by_patient


def test_conformal_threshold_controls_false_flags_on_exchangeable_scores():
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        holdout, fresh = rng.normal(size=400), rng.normal(size=400)
        rates.append(np.mean(fresh > stats.conformal_threshold(holdout, 0.99)))
    assert np.mean(rates) <= 0.0125  # guarantee: at most 1 - q on average
    assert np.mean(rates) > 0.004  # and not vacuous


def test_conformal_threshold_refuses_a_holdout_too_small_for_the_quantile():
    with pytest.raises(AuditError, match="need at least 199"):
        stats.conformal_threshold(np.arange(100.0), 0.995)


def test_conformal_pvalues_and_bh():
    holdout = np.arange(1.0, 100.0)  # 99 scores
    p = stats.conformal_pvalues(holdout, np.array([1000.0, 50.0, -5.0]))
    assert p[0] == pytest.approx(1 / 100) and p[1] == pytest.approx(51 / 100) and p[2] == 1.0
    reject = stats.benjamini_hochberg(np.array([0.001, 0.002, 0.5, 0.9]), 0.05)
    assert reject.tolist() == [True, True, False, False]


def test_wilson_interval_known_values():
    lo, hi = stats.wilson_interval(0, 100)
    assert lo == 0.0 and hi == pytest.approx(0.037, abs=0.001)
    lo, hi = stats.wilson_interval(50, 100)
    assert lo == pytest.approx(0.404, abs=0.001) and hi == pytest.approx(0.596, abs=0.001)


def test_auc_and_tpr_at_fpr():
    rng = np.random.default_rng(1)
    same = stats.auc(rng.normal(size=2000), rng.normal(size=2000))
    assert abs(same - 0.5) < 0.03
    assert stats.auc(np.array([5.0, 6.0]), np.array([1.0, 2.0])) == 1.0
    members, nonmembers = np.arange(100, 200.0), np.arange(0, 100.0)
    assert stats.tpr_at_fpr(members, nonmembers, 0.01) == 1.0
    lo, hi = stats.bootstrap_interval(stats.auc, (rng.normal(1, 1, 300), rng.normal(0, 1, 300)))
    assert lo < 0.76 < hi  # true AUC of N(1,1) vs N(0,1) is Phi(1/sqrt 2) = 0.760


def test_aligned_ncc_finds_shifted_mirrored_and_rescaled_copies():
    rng = np.random.default_rng(2)
    from scipy import ndimage

    base = ndimage.gaussian_filter(rng.standard_normal((4, 64, 64)), 2).astype(np.float32)
    other = ndimage.gaussian_filter(rng.standard_normal((4, 64, 64)), 2).astype(np.float32)
    shifted = np.roll(base, (3, -4), axis=(1, 2))[:, :, ::-1] * 0.5 + 0.2  # mirror + contrast
    same = aligned_ncc(torch.from_numpy(shifted.copy()), torch.from_numpy(base))
    different = aligned_ncc(torch.from_numpy(shifted.copy()), torch.from_numpy(other))
    assert (same > 0.99).all() and (different < 0.6).all()


def test_topk_by_patient_returns_one_image_per_patient():
    refs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]]), dim=1)
    groups = np.array([0, 0, 1])  # images 0 and 1 are one patient's two visits
    index, sim = topk_by_patient(torch.tensor([[1.0, 0.0]]), refs, groups, k=2)
    assert index.tolist() == [[0, 2]]
    assert sim[0, 0] == pytest.approx(1.0)


def test_topk_by_patient_takes_each_image_best_view():
    """Views are compared one at a time (search._best_view): the result is the plain product's
    maximum over views (to rounding: GEMM kernels may differ by matrix shape and CPU)."""
    g = torch.Generator().manual_seed(0)
    views, n = 3, 300
    refs = torch.nn.functional.normalize(torch.randn(views * n, 8, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(600, 8, generator=g), dim=1)
    groups = np.arange(n) // 2
    index, sim = topk_by_patient(queries, refs, groups, k=4, views=views)
    plain = (queries @ refs.T).view(len(queries), views, n).amax(1)
    found = plain.gather(1, torch.from_numpy(index)).numpy()
    assert np.allclose(sim, found, atol=1e-5)
    assert np.allclose(sim[:, 0], plain.max(1).values.numpy(), atol=1e-5)


def test_search_benchmark_reports_every_stage():
    from privacy_audit.bench import benchmark_search
    from privacy_audit.copies import ENCODER_DEPTH

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = benchmark_search(n_query=40, n_train=60, size=32, k=3, repeats=2)
    finally:
        torch.set_num_threads(threads)
    for key in ("copy_detection_seconds", "legacy_copy_detection_seconds"):  # each method twice,
        runs = result[f"{key}_runs"]  # taking turns: the median of the two reported
        assert len(runs) == 2 and result[key] == pytest.approx(float(np.median(runs)), abs=0.01)
    for key in ("embed_images_per_second", "search_seconds", "copy_detection_seconds"):
        assert result[key] > 0
    assert result["copy_queries"] == 4  # a tenth of the queries copy a training image
    for method in ("", "legacy_"):  # registration and, in the same run, the former method
        assert result[f"{method}copy_detection_cpu_seconds"] > 0
    # ENCODER_DEPTH * k by the encoder, k per other route: pixel thumbnail (as is, mirrored) and,
    # for registration, band-passed detail (as is, mirrored); the former method k by the encoder
    assert 3 <= result["candidates_per_query"] <= (ENCODER_DEPTH + 4) * 3
    assert 3 <= result["legacy_candidates_per_query"] <= 9
