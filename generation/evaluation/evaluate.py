"""Judging a synthetic set against the real data: distribution (Frechet distance and improved
precision/recall in the domain encoder's space, with a real-vs-real reference for scale),
diversity (MS-SSIM within each condition), condition adherence (domain classifier and regressor
on the synthetic images against the requested conditions, beside the same on real images) and a
per-subgroup breakdown."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from conditioning.dataset import CATEGORICAL, Dataset

from .domain_models import DomainModels, Predictions, score_predictions
from .images import ImageSet, load_split
from .metrics import (
    AGE_BANDS_MONTHS,
    age_band,
    frechet_distance,
    frechet_interval,
    ms_ssim_diversity,
    precision_recall,
)

log = logging.getLogger(__name__)
MIN_GROUP_FOR_DISTRIBUTION = 10  # fewer images make FD / precision-recall meaningless


@dataclass
class Evaluation:
    """metrics: the flat-ish dict for metrics.json; tables: rows for plots/*.csv; the image sets
    and predictions for figures."""

    metrics: dict
    tables: dict[str, list[dict]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    real: ImageSet | None = None
    synthetic: ImageSet | None = None
    real_predictions: Predictions | None = None
    synthetic_predictions: Predictions | None = None
    baseline: ImageSet | None = None  # with --baseline: drawn beside the synthetic set


def reference_split(dataset: Dataset, real_split: str) -> str | None:
    """The second real split the real-vs-real reference compares against."""
    for candidate in ("val", "test", "train"):
        if candidate != real_split and dataset.split(candidate):
            return candidate
    return None


def group_labels(images: ImageSet, domain: DomainModels) -> dict[str, list[str | None]]:
    """Subgroup label of each image per grouping attribute: categorical values, age bands for
    continuous attributes measured in months."""
    groups: dict[str, list[str | None]] = {}
    for attribute in domain.schema.attributes:
        values = images.values(attribute.name)
        if attribute.kind == CATEGORICAL:
            groups[attribute.name] = list(values)
        elif attribute.unit == "months":
            groups[f"{attribute.name}_band"] = [age_band(v) for v in values]
    return groups


def group_order(group: str, domain: DomainModels) -> list[str]:
    """Subgroup values in their natural order: the vocabulary, or the age bands youngest first."""
    if group in domain.schema:
        return list(domain.schema[group].values)
    return [label for _, _, label in AGE_BANDS_MONTHS]


def _nanmean(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return float(np.mean(clean)) if clean else math.nan


def _within_class_fd(real, real_pred, other, other_pred, attribute, k) -> float:
    """Mean over classes of the FD between two real splits restricted to that class."""
    values = []
    for value in attribute.values:
        ri = [i for i, v in enumerate(real.values(attribute.name)) if v == value]
        oi = [i for i, v in enumerate(other.values(attribute.name)) if v == value]
        values.append(_distribution(real_pred.features[ri], other_pred.features[oi], k)["fd"])
    return _nanmean(values)


def _distribution(real: np.ndarray, synthetic: np.ndarray, k: int, interval: bool = False) -> dict:
    """FD and precision/recall; with `interval`, also the FD's bootstrap interval (fd_low/high)."""
    if min(len(real), len(synthetic)) < max(MIN_GROUP_FOR_DISTRIBUTION, k + 1):
        empty = {"fd": math.nan, "precision": math.nan, "recall": math.nan}
        return {**empty, "fd_low": math.nan, "fd_high": math.nan} if interval else empty
    out = {"fd": frechet_distance(real, synthetic), **precision_recall(real, synthetic, k)}
    if interval:
        out["fd_low"], out["fd_high"] = frechet_interval(real, synthetic)
    return out


def _diversity(images: ImageSet, groups: dict, n_pairs: int, seed: int) -> dict:
    """Mean pairwise MS-SSIM within each value of each categorical attribute, and overall."""
    out = {"all": ms_ssim_diversity(images.images, n_pairs, seed)}
    for name, labels in groups.items():
        for value in sorted({v for v in labels if v is not None}):
            index = [i for i, v in enumerate(labels) if v == value]
            out[f"{name}={value}"] = ms_ssim_diversity(images.images[index], n_pairs, seed)
    return out


@dataclass(frozen=True)
class _Side:
    """One side of a comparison: images, the domain models' predictions, subgroup labels."""

    images: ImageSet
    pred: Predictions
    groups: dict[str, list[str | None]]


def _side(images: ImageSet, domain: DomainModels) -> _Side:
    return _Side(images, domain.predict(images.images), group_labels(images, domain))


def evaluate_synthetic_set(
    synthetic: ImageSet,
    dataset: Dataset,
    domain: DomainModels,
    *,
    real_split: str = "test",
    k: int = 3,
    n_pairs: int = 200,
    seed: int = 0,
) -> Evaluation:
    """All metrics of one synthetic set against one real split of `dataset`."""
    _warn_about_inputs(dataset, domain, real_split)
    real = load_split(dataset, real_split)
    other_split = reference_split(dataset, real_split)
    log.info(
        "domain models on %d real %s and %d synthetic images", len(real), real_split, len(synthetic)
    )
    real_side, syn_side = _side(real, domain), _side(synthetic, domain)
    metrics: dict = {"n_synthetic": len(synthetic), "n_real": len(real)}
    info = {
        "real_split": real_split,
        "reference_split": other_split,
        "encoder": domain.encoder_name,
        "domain_models": str(domain.directory),
        "domain_models_data_hash": domain.data_hash,
        "dataset_name": dataset.name,
        "dataset_hash": dataset.content_hash(),
        "k": k,
        "ms_ssim_pairs": n_pairs,
        "seed": seed,
    }
    dist = _overall_distribution(metrics, real_side, syn_side, k)
    other = None
    if other_split is not None:
        other = _side(load_split(dataset, other_split), domain)
        _reference_distribution(metrics, dist, (real_side, syn_side, other), k, seed)
    syn_div, real_div = _diversity_metrics(metrics, syn_side, real_side, domain, n_pairs, seed)
    tables = _adherence(metrics, syn_side, real_side, domain)
    tables["subgroups"] = _subgroups(syn_side, real_side, domain, k)
    _within_class_distribution(metrics, tables["subgroups"], (real_side, other), domain, k)
    metrics["subgroups"] = {
        f"{row['group']}={row['value']}": {
            key: row[key] for key in row if key not in ("group", "value")
        }
        for row in tables["subgroups"]
    }
    tables["precision_recall"] = [
        {"scope": "all", "precision": dist["precision"], "recall": dist["recall"]}
    ] + [
        {
            "scope": f"{row['group']}={row['value']}",
            "precision": row["precision"],
            "recall": row["recall"],
        }
        for row in tables["subgroups"]
    ]
    tables["ms_ssim"] = [
        {"group": g, "synthetic": syn_div.get(g, math.nan), "real": real_div.get(g, math.nan)}
        for g in dict.fromkeys([*syn_div, *real_div])
    ]
    return Evaluation(metrics, tables, info, real, synthetic, real_side.pred, syn_side.pred)


def _warn_about_inputs(dataset: Dataset, domain: DomainModels, real_split: str) -> None:
    if domain.data_hash != dataset.content_hash():
        log.warning("domain models were trained on another version of this dataset")
    if real_split == "train":
        log.warning(
            "the domain encoder was trained on the train split: its features of train images are "
            "not comparable with those of unseen (synthetic) images; prefer --real-split test"
        )


def _overall_distribution(metrics: dict, real: _Side, syn: _Side, k: int) -> dict:
    """FD (with its interval) and precision/recall of the whole synthetic set against the real
    split, into `metrics`; returns them."""
    dist = _distribution(real.pred.features, syn.pred.features, k, interval=True)
    if math.isnan(dist["fd"]):
        log.warning(
            "Frechet distance and precision/recall skipped: they need at least %d images on each "
            "side (synthetic %d, real %d)",
            max(MIN_GROUP_FOR_DISTRIBUTION, k + 1),
            len(syn.images),
            len(real.images),
        )
    metrics["fd"] = {
        "synthetic_vs_real": dist["fd"],
        "synthetic_vs_real_interval": [dist["fd_low"], dist["fd_high"]],
    }
    metrics["precision_recall"] = {"k": k, "precision": dist["precision"], "recall": dist["recall"]}
    return dist


def _reference_distribution(metrics: dict, dist: dict, sides, k: int, seed: int) -> None:
    """The real-vs-real reference (real split against the other one) that gives FD its scale,
    and the synthetic FD at the reference's size (FD shrinks with sample size)."""
    real, syn, other = sides
    reference = _distribution(real.pred.features, other.pred.features, k)
    fd = metrics["fd"]
    fd["real_vs_real"] = reference["fd"]
    fd["n_reference"] = len(other.images)
    rr = reference["fd"]
    fd["ratio_to_real"] = dist["fd"] / rr if rr and rr > 0 else math.nan
    if len(syn.images) > len(other.images):
        pick = np.random.default_rng(seed).choice(len(syn.images), len(other.images), replace=False)
        fd["synthetic_vs_real_at_reference_n"] = _distribution(
            real.pred.features, syn.pred.features[pick], k
        )["fd"]
    metrics["precision_recall"]["real_vs_real_precision"] = reference["precision"]
    metrics["precision_recall"]["real_vs_real_recall"] = reference["recall"]


def _diversity_metrics(metrics, syn: _Side, real: _Side, domain, n_pairs: int, seed: int):
    """MS-SSIM diversity of both sides, overall and within each categorical value."""
    categorical_groups = {
        n: v
        for n, v in syn.groups.items()
        if n in domain.schema and domain.schema[n].kind == CATEGORICAL
    }
    real_categorical = {n: real.groups[n] for n in categorical_groups}
    log.info("MS-SSIM diversity (%d random pairs per group)", n_pairs)
    syn_div = _diversity(syn.images, categorical_groups, n_pairs, seed)
    real_div = _diversity(real.images, real_categorical, n_pairs, seed)
    metrics["ms_ssim"] = {
        "synthetic": syn_div["all"],
        "real": real_div["all"],
        **{f"synthetic.{g}": v for g, v in syn_div.items() if g != "all"},
        **{f"real.{g}": v for g, v in real_div.items() if g != "all"},
    }
    return syn_div, real_div


def _adherence(metrics: dict, syn: _Side, real: _Side, domain: DomainModels) -> dict:
    """How well the synthetic images show their requested conditions (beside the same on real
    images) into `metrics`; returns the tables it fills (per class, requested vs predicted age)."""
    syn_scores = score_predictions(syn.pred, syn.images, domain.schema)
    real_scores = score_predictions(real.pred, real.images, domain.schema)
    adherence: dict = {}
    tables: dict[str, list[dict]] = {"adherence_per_class": [], "subgroups": [], "age": []}
    for attribute in domain.schema.attributes:
        s, r = syn_scores[attribute.name], real_scores[attribute.name]
        if attribute.kind == CATEGORICAL:
            adherence[attribute.name] = {
                "n_requested": s["n"],
                "accuracy": s["accuracy"],
                "macro_auroc": s["macro_auroc"],
                "real_accuracy": r["accuracy"],
                "real_macro_auroc": r["macro_auroc"],
            }
            tables["adherence_per_class"] += _per_class_rows(attribute, s, r)
        else:
            adherence[attribute.name] = {
                "n_requested": s["n"],
                "mae": s["mae"],
                "real_mae": r["mae"],
            }
            requested = syn.images.values(attribute.name)
            tables["age"] += [
                {"attribute": attribute.name, "requested": req, "predicted": float(pred)}
                for req, pred in zip(requested, syn.pred.values[attribute.name], strict=True)
                if req is not None
            ]
    metrics["adherence"] = adherence
    return tables


def _per_class_rows(attribute, syn_score: dict, real_score: dict) -> list[dict]:
    rows = []
    for value in attribute.values:
        sc, rc = syn_score["per_class"][value], real_score["per_class"][value]
        rows.append(
            {
                "attribute": attribute.name,
                "class": value,
                "n_synthetic": sc["n"],
                "recall_synthetic": sc["recall"],
                "auroc_synthetic": sc["auroc"],
                "n_real": rc["n"],
                "recall_real": rc["recall"],
                "auroc_real": rc["auroc"],
            }
        )
    return rows


def _within_class_distribution(metrics: dict, subgroups: list, sides, domain, k: int) -> None:
    """FD within each class (blind to the class mix), and its real-vs-real reference."""
    real, other = sides
    for attribute in domain.schema.attributes:
        if attribute.kind != CATEGORICAL:
            continue
        rows = [r for r in subgroups if r["group"] == attribute.name]
        metrics["fd"][f"within_{attribute.name}"] = _nanmean([r["fd"] for r in rows])
        if other is not None:
            metrics["fd"][f"within_{attribute.name}_real_vs_real"] = _within_class_fd(
                real.images, real.pred, other.images, other.pred, attribute, k
            )


def _subgroups(syn: _Side, real_side: _Side, domain: DomainModels, k: int) -> list:
    """Per subgroup (each value of each grouping attribute): counts, distribution metrics against
    the real images of the same subgroup, and adherence of every head."""
    synthetic, syn_pred, syn_groups = syn.images, syn.pred, syn.groups
    real, real_pred, real_groups = real_side.images, real_side.pred, real_side.groups
    rows = []
    for group, labels in syn_groups.items():
        real_labels = real_groups.get(group, [None] * len(real))
        present = {v for v in [*labels, *real_labels] if v is not None}
        for value in [v for v in group_order(group, domain) if v in present]:
            si = np.array([i for i, v in enumerate(labels) if v == value], dtype=np.int64)
            ri = np.array([i for i, v in enumerate(real_labels) if v == value], dtype=np.int64)
            row: dict = {"group": group, "value": value, "n_synthetic": len(si), "n_real": len(ri)}
            row.update(_distribution(real_pred.features[ri], syn_pred.features[si], k, True))
            for subset, pred, index, tag in (
                (synthetic, syn_pred, si, "synthetic"),
                (real, real_pred, ri, "real"),
            ):
                if len(index) == 0:
                    continue
                part = subset.subset(index)
                sub_pred = Predictions(
                    {n: p[index] for n, p in pred.probabilities.items()},
                    {n: v[index] for n, v in pred.values.items()},
                    pred.features[index],
                )
                for name, score in score_predictions(sub_pred, part, domain.schema).items():
                    if "accuracy" in score:
                        row[f"{name}_accuracy_{tag}"] = score["accuracy"]
                    else:
                        row[f"{name}_mae_{tag}"] = score["mae"]
            rows.append(row)
    return rows
