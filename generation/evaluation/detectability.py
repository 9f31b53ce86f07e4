"""Detectability of synthetic images: a classifier two-sample test (C2ST).

A small CNN learns to tell real images from synthetic ones; its AUROC on images it did not train
on says how much of a "synthetic look" a downstream model could pick up as a shortcut. 0.5 means
no such classifier finds a difference; 1.0 means every image gives itself away.

Design choices, all for a test that means what it says:
- Equal counts per class on both sides (the real split's class mix, cut to what the synthetic
  set holds), so the test cannot win by learning "this class is more often synthetic".
- Two-fold cross-fitting: each half trains a classifier that scores the other half, so every
  image gets one out-of-fold score and the AUROC uses all of them.
- No augmentation: resampling blurs real and synthetic images alike and would hide the very
  high-frequency differences the test is for.
- Per condition: the same out-of-fold scores restricted to one class on both sides.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np

from conditioning.bootstrap import bootstrap_interval
from conditioning.dataset import CATEGORICAL, ConditionSchema, Dataset

from .fit import FitConfig, Targets, fit, run_inference, seed_everything
from .images import ImageSet, load_split, to_tensor
from .networks import ConditionNet

log = logging.getLogger(__name__)
HEAD = "origin"  # class 1 = synthetic
MIN_PER_SIDE = 8


@dataclass(frozen=True)
class DetectabilityConfig:
    """How the real-vs-synthetic classifier is trained; stored beside the result."""

    epochs: int = 8
    seed: int = 0
    n_boot: int = 500
    max_per_side: int = 2000  # caps training time on large sets

    def fit_config(self, fold: int) -> FitConfig:
        return FitConfig(
            epochs=self.epochs,
            seed=self.seed * 7 + fold,
            max_shift=0.0,
            max_rotate=0.0,
            max_scale=0.0,
            intensity=0.0,
            balance_classes=False,
        )


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both labels."""
    from scipy.stats import rankdata

    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _stratum(images: ImageSet, attribute: str | None) -> list:
    return images.values(attribute) if attribute else [None] * len(images)


def matched_pairs(
    real: ImageSet, synthetic: ImageSet, attribute: str | None, cap: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of real and synthetic images with equal counts per value of `attribute` (every
    image is one stratum when it is None), at most `cap` per side in the real split's mix."""
    rng = np.random.default_rng(seed)
    real_strata, syn_strata = _stratum(real, attribute), _stratum(synthetic, attribute)
    values = list(dict.fromkeys(v for v in real_strata if v is not None or attribute is None))
    per_value = {}
    for value in values:
        r = [i for i, v in enumerate(real_strata) if v == value]
        s = [i for i, v in enumerate(syn_strata) if v == value]
        per_value[value] = (r, s, min(len(r), len(s)))
    total = sum(n for _, _, n in per_value.values())
    scale = min(1.0, cap / total) if total else 0.0
    real_pick, syn_pick = [], []
    for r, s, n in per_value.values():
        k = int(math.floor(n * scale))
        real_pick += sorted(rng.choice(r, k, replace=False).tolist()) if k else []
        syn_pick += sorted(rng.choice(s, k, replace=False).tolist()) if k else []
    return np.array(real_pick, dtype=np.int64), np.array(syn_pick, dtype=np.int64)


def _out_of_fold_scores(images: np.ndarray, labels: np.ndarray, folds: np.ndarray, config):
    """P(synthetic) for every image from the classifier trained on the other fold."""
    size = images.shape[-1]
    tensor = to_tensor(images, size)
    scores = np.zeros(len(images), dtype=np.float64)
    for fold in (0, 1):
        train, held = folds != fold, folds == fold
        fit_config = config.fit_config(fold)
        seed_everything(fit_config.seed)
        model = ConditionNet({HEAD: 2}, channels=fit_config.channels)
        fit(
            model,
            tensor[np.flatnonzero(train)],
            Targets({HEAD: _long(labels[train])}),
            fit_config,
            desc=f"detectability fold {fold}",
        )
        outputs, _ = run_inference(model, tensor[np.flatnonzero(held)])
        scores[held] = outputs[HEAD].softmax(1)[:, 1].double().numpy()
    return scores


def _long(values: np.ndarray):
    import torch

    return torch.from_numpy(values.astype(np.int64))


def detectability(
    real: ImageSet,
    synthetic: ImageSet,
    schema: ConditionSchema,
    config: DetectabilityConfig | None = None,
) -> dict:
    """Real-vs-synthetic AUROC with a 95% bootstrap interval, overall and per class of the first
    categorical attribute; the counts used and the recipe go with it."""
    config = config or DetectabilityConfig()
    attribute = next((a.name for a in schema.attributes if a.kind == CATEGORICAL), None)
    if attribute and not any(v is not None for v in synthetic.values(attribute)):
        attribute = None  # an unconditioned set: match counts only
    ri, si = matched_pairs(real, synthetic, attribute, config.max_per_side, config.seed)
    result: dict = {
        "method": "classifier two-sample test, 2-fold cross-fitted, per-class matched counts",
        "n_real": len(ri),
        "n_synthetic": len(si),
        "matched_on": attribute,
        "recipe": asdict(config),
    }
    if len(ri) < MIN_PER_SIDE:
        log.warning("detectability skipped: fewer than %d matched images per side", MIN_PER_SIDE)
        return {**result, "auroc": math.nan, "interval": [math.nan, math.nan], "per_class": {}}
    images = np.concatenate([real.images[ri], synthetic.images[si]])
    labels = np.concatenate([np.zeros(len(ri)), np.ones(len(si))]).astype(np.int64)
    strata = [*np.array(_stratum(real, attribute), dtype=object)[ri]] + [
        *np.array(_stratum(synthetic, attribute), dtype=object)[si]
    ]
    folds = _folds(labels, strata, config.seed)
    scores = _out_of_fold_scores(images, labels, folds, config)
    result.update(_scored(scores, labels, config))
    result["per_class"] = {}
    if attribute:
        for value in dict.fromkeys(strata):
            mask = np.array([s == value for s in strata])
            result["per_class"][str(value)] = {
                "n_per_side": int(mask.sum() // 2),
                **_scored(scores[mask], labels[mask], config),
            }
    log.info(
        "detectability AUROC %.3f [%.3f, %.3f] on %d + %d images",
        result["auroc"],
        *result["interval"],
        len(ri),
        len(si),
    )
    return result


def _folds(labels: np.ndarray, strata: list, seed: int) -> np.ndarray:
    """Alternate folds within each (origin, stratum) cell, in a seeded order."""
    rng = np.random.default_rng(seed + 1)
    folds = np.zeros(len(labels), dtype=np.int64)
    cells: dict = {}
    for i, key in enumerate(zip(labels.tolist(), strata, strict=True)):
        cells.setdefault(key, []).append(i)
    for members in cells.values():
        order = rng.permutation(members)
        folds[order[1::2]] = 1
    return folds


def _scored(scores: np.ndarray, labels: np.ndarray, config: DetectabilityConfig) -> dict:
    value = auroc(scores, labels)
    if value != value or min((labels == 1).sum(), (labels == 0).sum()) < 2:
        return {"auroc": value, "interval": [math.nan, math.nan]}
    real, syn = scores[labels == 0], scores[labels == 1]

    def statistic(r, s):
        return auroc(np.concatenate([r, s]), np.r_[np.zeros(len(r)), np.ones(len(s))])

    low, high = bootstrap_interval(statistic, (real, syn), n_boot=config.n_boot, seed=config.seed)
    return {"auroc": value, "interval": [low, high]}


def detection_split(dataset: Dataset) -> str:
    """The real images to test against: `val`, held out from the generator's training split and
    drawn from the same source (Kermany's `test` comes from another acquisition batch, which a
    classifier tells from `val` too); `test` where there is no `val`."""
    return "val" if dataset.split("val") else "test"


def detect_synthetic_set(
    synthetic: ImageSet, dataset: Dataset, config: DetectabilityConfig | None = None
) -> dict:
    """`detectability` of a synthetic set against the dataset's held-out real images."""
    split = detection_split(dataset)
    result = detectability(load_split(dataset, split), synthetic, dataset.schema, config)
    return {**result, "real_split": split}
