"""Metrics for synthetic images, each a small function on arrays: Frechet distance and improved
precision/recall in a feature space, MS-SSIM diversity, and condition adherence (accuracy,
macro-AUROC, per-class recall, MAE). MONAI supplies FID, MS-SSIM, ROC AUC and MAE."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from conditioning.bootstrap import resample

# Age bands (months) used for per-subgroup breakdowns of continuous age attributes.
AGE_BANDS_MONTHS: tuple[tuple[float, float, str], ...] = (
    (0.0, 12.0, "0-1y"),
    (12.0, 60.0, "1-5y"),
    (60.0, 144.0, "5-12y"),
    (144.0, math.inf, "12y+"),
)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _features(x: np.ndarray | torch.Tensor, name: str, minimum: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name}: features must be (samples, dims), got shape {tuple(t.shape)}")
    if len(t) < minimum:
        raise ValueError(f"{name}: needs at least {minimum} samples, got {len(t)}")
    return t


def frechet_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (MONAI's FID formula;
    "FID" proper only with Inception features, here in the domain encoder's space)."""
    from monai.metrics.fid import get_fid_score

    a = _features(real, "real", 2)
    b = _features(synthetic, "synthetic", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    value = float(get_fid_score(b, a))
    return max(value, 0.0)  # sqrtm round-off can leave a tiny negative for identical sets


def frechet_interval(
    real: np.ndarray, synthetic: np.ndarray, n_boot: int = 100, seed: int = 0
) -> tuple[float, float]:
    """95% bias-corrected percentile bootstrap interval of the FD, resampling both sets.

    A resample with replacement repeats images, which shrinks the covariance spread and inflates
    the FD, so plain percentiles sit above the estimate and can exclude it. The bootstrap
    distribution (scipy.stats.bootstrap, each set resampled independently, method="percentile")
    is shifted by its bias (its mean minus the estimate) before the percentiles are read: the
    interval keeps the sampling spread (about a unit between draws with a few hundred images
    per side, the scale a comparison of two models needs) around the estimate."""
    samples = (np.asarray(real), np.asarray(synthetic))
    draws = resample(frechet_distance, samples, n_boot, seed)
    bias = float(draws.values.mean()) - frechet_distance(*samples)
    # percentiles of (draws - bias) are the percentiles of the draws, less the bias
    return (max(float(draws.low) - bias, 0.0), float(draws.high) - bias)


def frechet_difference(
    real: np.ndarray, synthetic: np.ndarray, baseline: np.ndarray, n_boot: int = 200, seed: int = 0
) -> dict[str, float]:
    """FD(synthetic) - FD(baseline) against the same real images, with a 95% paired percentile
    bootstrap interval (scipy.stats.bootstrap): each draw resamples the real images once for
    both, so their sampling noise, the larger share with a small real test set, cancels. Sets
    of equal size are resampled by the same indices: image i of two sets generated with one
    seed starts from the same noise."""
    real, synthetic, baseline = (np.asarray(a) for a in (real, synthetic, baseline))
    if len(synthetic) == len(baseline):
        samples = (real, np.arange(len(synthetic)))  # one index draws both sets

        def difference(r, i):
            return frechet_distance(r, synthetic[i]) - frechet_distance(r, baseline[i])

    else:
        samples = (real, synthetic, baseline)

        def difference(r, s, b):
            return frechet_distance(r, s) - frechet_distance(r, b)

    draws = resample(difference, samples, n_boot, seed)
    fd, fd_base = frechet_distance(real, synthetic), frechet_distance(real, baseline)
    return {
        "fd": fd,
        "fd_baseline": fd_base,
        "difference": fd - fd_base,
        "low": float(draws.low),
        "high": float(draws.high),
        "share_of_draws_lower": float(np.mean(draws.values < 0)),
    }


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each sample to its k-th nearest neighbour in the same set (self excluded)."""
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values


def inside_any_ball(
    queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    inside = []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], centres)
        inside.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the share of
    synthetic samples inside the real manifold (union of k-NN balls around real samples),
    recall the share of real samples inside the synthetic manifold."""
    a = _features(real, "real", k + 1)
    b = _features(synthetic, "synthetic", k + 1)
    precision = inside_any_ball(b, a, knn_radii(a, k)).double().mean()
    recall = inside_any_ball(a, b, knn_radii(b, k)).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def ms_ssim_settings(size: int) -> dict:
    """Scales and kernel that MS-SSIM can use at this image size (5 scales need ~176 px)."""
    if size >= 176:
        scales, kernel, sigma = 5, 11, 1.5
    elif size >= 64:
        scales, kernel, sigma = 3, 7, 1.5
    elif size >= 32:
        scales, kernel, sigma = 3, 5, 1.0
    elif size >= 16:
        scales, kernel, sigma = 2, 5, 1.0
    else:
        raise ValueError(f"MS-SSIM needs images of at least 16 px, got {size}")
    weights = np.array(MS_SSIM_WEIGHTS[:scales])
    return {
        "kernel_size": kernel,
        "kernel_sigma": sigma,
        "weights": tuple((weights / weights.sum()).tolist()),
    }


def ms_ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """MS-SSIM of image pairs: a and b are (N, H, W) in [0, 1]; returns N values."""
    from monai.metrics.regression import compute_ms_ssim

    x = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float32)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"ms_ssim needs two (N, H, W) stacks of one shape: {x.shape}, {y.shape}")
    settings = ms_ssim_settings(min(x.shape[-2:]))
    values = compute_ms_ssim(
        x.unsqueeze(1), y.unsqueeze(1), spatial_dims=2, data_range=1.0, **settings
    )
    return values.reshape(-1).numpy().astype(np.float64)


def random_pairs(n: int, n_pairs: int, seed: int = 0) -> np.ndarray:
    """`n_pairs` random pairs (i, j) with i != j, all distinct pairs when there are fewer."""
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    all_pairs = n * (n - 1) // 2
    rng = np.random.default_rng(seed)
    if all_pairs <= n_pairs:
        i, j = np.triu_indices(n, k=1)
        return np.stack([i, j], 1)
    i = rng.integers(0, n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n
    return np.stack([i, j], 1)


def ms_ssim_diversity(images: np.ndarray, n_pairs: int = 200, seed: int = 0) -> float:
    """Mean MS-SSIM over random pairs within one set: lower means more diverse (1 = all the
    same image). NaN for fewer than two images."""
    pairs = random_pairs(len(images), n_pairs, seed)
    if len(pairs) == 0:
        return math.nan
    values = [
        ms_ssim(images[pairs[s : s + 256, 0]], images[pairs[s : s + 256, 1]])
        for s in range(0, len(pairs), 256)
    ]
    return float(np.concatenate(values).mean())


def label_indices(values: Sequence[str | None], classes: Sequence[str]) -> np.ndarray:
    """Class names to indices; unknown (None) becomes -1."""
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[v] if v is not None else -1 for v in values], dtype=np.int64)


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> dict:
    """Accuracy, macro-AUROC (mean over classes that have positives and negatives) and per-class
    n / recall / AUROC of predicted class probabilities against labels (-1 rows ignored)."""
    from monai.metrics import compute_roc_auc

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    known = labels >= 0
    p, y = probabilities[known], labels[known]
    out: dict = {"n": int(known.sum()), "per_class": {}}
    if len(y) == 0:
        out.update(accuracy=math.nan, macro_auroc=math.nan)
        return out
    predicted = p.argmax(axis=1)
    out["accuracy"] = float((predicted == y).mean())
    aurocs = []
    for c, name in enumerate(classes):
        positives = y == c
        entry = {"n": int(positives.sum()), "recall": math.nan, "auroc": math.nan}
        if positives.any():
            entry["recall"] = float((predicted[positives] == c).mean())
        if positives.any() and (~positives).any():
            entry["auroc"] = float(
                compute_roc_auc(torch.from_numpy(p[:, c]), torch.from_numpy(positives.astype(int)))
            )
            aurocs.append(entry["auroc"])
        out["per_class"][name] = entry
    out["macro_auroc"] = (
        float(np.mean(aurocs)) if len(aurocs) >= 1 and len(set(y)) > 1 else math.nan
    )
    return out


def regression_metrics(predicted: np.ndarray, target: Sequence[float | None]) -> dict:
    """Mean absolute error over rows with a known target (MONAI MAEMetric)."""
    from monai.metrics import MAEMetric

    target = np.array([math.nan if t is None else float(t) for t in target], dtype=np.float64)
    known = ~np.isnan(target)
    if not known.any():
        return {"n": 0, "mae": math.nan}
    metric = MAEMetric(reduction="mean")
    mae = metric(
        torch.from_numpy(np.asarray(predicted, dtype=np.float64)[known]).view(-1, 1),
        torch.from_numpy(target[known]).view(-1, 1),
    )
    return {"n": int(known.sum()), "mae": float(mae.mean())}


def age_band(months: float | None) -> str | None:
    """The AGE_BANDS_MONTHS label of an age in months."""
    if months is None:
        return None
    for low, high, label in AGE_BANDS_MONTHS:
        if low <= months < high:
            return label
    return None
