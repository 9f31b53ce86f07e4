"""The statistics of the audit: conformal thresholds and p-values from held-out scores,
Wilson and bootstrap intervals, ROC/AUC and TPR at a fixed FPR."""

from __future__ import annotations

import math

import numpy as np

from conditioning.bootstrap import bootstrap_interval  # noqa: F401  (callers use stats.*)

from .errors import AuditError


def conformal_threshold(holdout_scores: np.ndarray, quantile: float) -> float:
    """The ceil((n+1)q)-th smallest holdout score: a new image exchangeable with the holdout
    exceeds it with probability at most 1-q (split-conformal guarantee)."""
    scores = np.sort(np.asarray(holdout_scores, dtype=np.float64))
    n = len(scores)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile {quantile} must lie strictly between 0 and 1")
    rank = math.ceil((n + 1) * quantile)
    if rank > n:
        need = math.ceil(quantile / (1 - quantile))
        raise AuditError(
            "holdout split",
            f"{n} held-out images cannot calibrate quantile {quantile}: need at least {need}",
        )
    return float(scores[rank - 1])


def conformal_pvalues(holdout_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """p = (1 + #{holdout >= s}) / (n + 1): small when s is larger than held-out images get."""
    ref = np.sort(np.asarray(holdout_scores, dtype=np.float64))
    n = len(ref)
    at_least = n - np.searchsorted(ref, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + at_least) / (n + 1.0)


def benjamini_hochberg(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Which hypotheses BH rejects at false-discovery rate alpha (scipy's adjusted p-values)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=np.float64)
    if len(p) == 0:
        return np.zeros(0, dtype=bool)
    return false_discovery_control(p, method="bh") <= alpha


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (scipy's binomtest)."""
    from scipy.stats import binomtest

    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return (max(0.0, float(ci.low)), min(1.0, float(ci.high)))


def roc_curve(member_scores: np.ndarray, nonmember_scores: np.ndarray):
    """(fpr, tpr) for 'higher score = member', over every threshold."""
    s = np.concatenate([member_scores, nonmember_scores]).astype(np.float64)
    y = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(1, len(member_scores))]
    fpr = np.r_[0.0, fps / max(1, len(nonmember_scores))]
    return fpr, tpr


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Probability that a member scores above a non-member (ties count half)."""
    from scipy.stats import rankdata

    m, n = len(member_scores), len(nonmember_scores)
    ranks = rankdata(np.concatenate([member_scores, nonmember_scores]))
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float) -> float:
    """Largest TPR of a threshold whose FPR does not exceed `fpr`."""
    f, t = roc_curve(member_scores, nonmember_scores)
    return float(t[f <= fpr + 1e-12].max())
