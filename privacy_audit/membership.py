"""Membership inference: does the model, or the released set, give away which images were
trained on? Against the model: per-image diffusion loss at fixed noise (and, when the model can,
a stepwise PIA/SecMI-style error), train vs held-out. Against the data: distance to closest
record (DCR) and a DOMIAS-style density ratio, in the copy-detection embedding."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from . import stats

log = logging.getLogger(__name__)

DEFAULT_TIMESTEP_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.3)


@runtime_checkable
class DiffusionModelProbe(Protocol):
    """What the audit needs from a trained model; `pipelines` adapts `generation` to it."""

    def denoising_error(
        self, images01: np.ndarray, conditions: list[dict], timesteps: list[int], seed: int
    ) -> np.ndarray:
        """(N, len(timesteps)): per-image denoising loss at each timestep, noise fixed by seed."""
        ...


@runtime_checkable
class StepwiseProbe(Protocol):
    """Optional, stronger: the error of a deterministic step pair (PIA/SecMI-style)."""

    def stepwise_error(
        self, images01: np.ndarray, conditions: list[dict], timesteps: list[int], seed: int
    ) -> np.ndarray: ...


TPR_NONMEMBERS = 100  # non-members below which the TPR at 1% FPR decides nothing: with fewer,
# a 1% FPR allows no false positive at all, and the TPR there is the share of members scoring
# above every non-member, which chance alone makes positive about half the time (12 against 12:
# a member scores highest with probability 1/2). The AUC still decides.


def tpr_decides(nonmembers: int) -> bool:
    """Whether an attack's TPR at 1% FPR counts in the verdict (TPR_NONMEMBERS)."""
    return nonmembers >= TPR_NONMEMBERS


def _summary(members: np.ndarray, nonmembers: np.ndarray, n_boot: int, seed: int) -> dict:
    """AUC and TPR at 1% FPR, with 95% bootstrap intervals, and the ROC curve to plot."""
    fpr, tpr = stats.roc_curve(members, nonmembers)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
    return {
        "auc": stats.auc(members, nonmembers),
        "auc_ci95": stats.bootstrap_interval(stats.auc, (members, nonmembers), n_boot, seed),
        "tpr_at_1pct_fpr": stats.tpr_at_fpr(members, nonmembers, 0.01),
        "tpr_at_1pct_fpr_ci95": stats.bootstrap_interval(
            lambda a, b: stats.tpr_at_fpr(a, b, 0.01), (members, nonmembers), n_boot, seed
        ),
        "members": len(members),
        "nonmembers": len(nonmembers),
        "roc": {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()},
    }


@dataclass(frozen=True)
class AttackSettings:
    """How a model attack runs: `seed` fixes the noise (the same for members and non-members),
    `n_boot` the bootstrap resamples of the intervals, `batch` the images per probe call."""

    seed: int = 0
    n_boot: int = 500
    batch: int = 64
    progress: bool = False


def _errors(method, images01, conditions, timesteps, settings: AttackSettings, desc) -> np.ndarray:
    from tqdm import tqdm

    seed, batch = settings.seed, settings.batch
    out = []
    steps = tqdm(range(0, len(images01), batch), desc=desc, disable=not settings.progress)
    for n, i in enumerate(steps):
        part = np.asarray(
            method(images01[i : i + batch], conditions[i : i + batch], list(timesteps), seed + n),
            dtype=np.float64,
        )
        expected = (min(batch, len(images01) - i), len(timesteps))
        if part.shape != expected:
            raise ValueError(f"model probe returned shape {part.shape}, expected {expected}")
        out.append(part)
    return np.concatenate(out)


def model_attack(
    probe: DiffusionModelProbe,
    members01: np.ndarray,
    member_conditions: list[dict],
    nonmembers01: np.ndarray,
    nonmember_conditions: list[dict],
    timesteps: list[int],
    settings: AttackSettings | None = None,
) -> dict:
    """Loss attack (lower loss = member) per timestep and combined (mean log loss over
    timesteps), plus the stepwise attack when the probe offers it. Member and non-member
    batches get the same noise seeds, so noise does not differ between the two groups."""
    settings = settings or AttackSettings()
    result: dict = {"timesteps": list(map(int, timesteps)), "attacks": {}}
    methods = [("loss", probe.denoising_error)]
    if isinstance(probe, StepwiseProbe):
        methods.append(("stepwise", probe.stepwise_error))
    for name, method in methods:
        em = _errors(
            method, members01, member_conditions, timesteps, settings, f"MIA {name}: train"
        )
        en = _errors(
            method, nonmembers01, nonmember_conditions, timesteps, settings, f"MIA {name}: holdout"
        )
        if not (np.isfinite(em).all() and np.isfinite(en).all()):
            raise ValueError(f"model probe {name} returned non-finite errors")
        result["attacks"][name] = _error_attack(em, en, timesteps, settings)
    strongest = max(result["attacks"], key=lambda k: result["attacks"][k]["auc"])
    result["strongest"] = strongest
    return result


def _error_attack(em: np.ndarray, en: np.ndarray, timesteps, settings: AttackSettings) -> dict:
    """Members' and non-members' errors (N, timesteps) -> the attack's summary: per-timestep
    AUC, and the combined score's AUC and TPR with intervals."""
    per_t = {
        str(t): stats.auc(-np.log(em[:, j] + 1e-12), -np.log(en[:, j] + 1e-12))
        for j, t in enumerate(timesteps)
    }
    sm, sn = -np.log(em + 1e-12).mean(1), -np.log(en + 1e-12).mean(1)
    entry = _summary(sm, sn, settings.n_boot, settings.seed)
    entry["auc_per_timestep"] = per_t
    entry["score"] = "minus mean log error over timesteps (higher = member)"
    return entry


def _min_cosine_distance(a: torch.Tensor, b: torch.Tensor, block: int = 4096) -> np.ndarray:
    out = []
    for i in range(0, len(a), block):
        out.append((1.0 - (a[i : i + block] @ b.T).amax(1)).clamp(min=0).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def dcr(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    holdout: torch.Tensor,
    repeats: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict:
    """Share of synthetic images closer to train than to holdout (cosine distance in the copy
    embedding). Train is subsampled to the holdout's size each repeat: a bigger reference set
    is closer by chance alone. About 0.5 is ideal; well above means the set hugs the training
    data."""
    rng = np.random.default_rng(seed)
    n = min(len(train), len(holdout))
    hold = holdout[torch.as_tensor(rng.choice(len(holdout), n, replace=False))]
    closer = np.zeros(len(synthetic))
    d_train_all = []
    for _ in range(repeats):
        sub = train[torch.as_tensor(rng.choice(len(train), n, replace=False))]
        d_train = _min_cosine_distance(synthetic, sub)
        d_hold = _min_cosine_distance(synthetic, hold)
        closer += (d_train < d_hold) + 0.5 * (d_train == d_hold)
        d_train_all.append(d_train)
    closer /= repeats
    share = float(closer.mean())
    return {
        "share_closer_to_train": share,
        "share_ci95": stats.bootstrap_interval(np.mean, (closer,), n_boot, seed),
        "reference_size": n,
        "repeats": repeats,
        "median_dcr_synthetic_to_train": float(np.median(np.mean(d_train_all, 0))),
        "median_dcr_holdout_to_train": float(np.median(_min_cosine_distance(hold, train))),
        "distance": "1 - cosine similarity in the copy-detection embedding",
    }


def _log_knn_radius(x: torch.Tensor, ref: torch.Tensor, k: int, exclude_self: bool) -> np.ndarray:
    d = (1.0 - x @ ref.T).clamp(min=1e-9)
    kk = k + 1 if exclude_self else k
    radius = d.topk(min(kk, d.shape[1]), dim=1, largest=False).values[:, -1]
    return np.log(radius.numpy())


def domias(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    holdout: torch.Tensor,
    k: int = 1,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict:
    """DOMIAS-style attack on the released set: an image whose neighbourhood is denser in the
    synthetic set than in real reference data is called a member. Half the holdout is the
    reference, the other half the non-members; as many training images are the members."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(holdout))
    half = len(perm) // 2
    n = min(len(perm) - half, len(train))  # as many members as non-members (a tiny training
    # split has fewer images than half the holdout)
    reference, nonmembers = holdout[perm[:half]], holdout[perm[half : half + n]]
    members = train[torch.as_tensor(rng.choice(len(train), n, replace=False))]

    def score(x: torch.Tensor) -> np.ndarray:  # log p_syn(x) - log p_ref(x), up to constants
        return _log_knn_radius(x, reference, k, False) - _log_knn_radius(x, synthetic, k, False)

    entry = _summary(score(members), score(nonmembers), n_boot, seed)
    entry["method"] = (
        f"k-NN density ratio (k={k}) in the copy-detection embedding; reference = half the holdout"
    )
    return entry
