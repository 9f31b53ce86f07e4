"""Named recipes for training a downstream classifier on real + synthetic images.

Synthetic images carry a look of their own. Wherever that look is more common in one class than
in another, a classifier learns "this look means that class" and, on real test images (which
never have the look), under-predicts the classes the synthetic set filled up. Each recipe is one
answer to that, and `radsynth bench utility` measures them side by side:

- `mix`: real and synthetic images in one training set, inverse class-frequency weights over the
  union (the plain approach);
- `balanced`: within real images and within synthetic images every class weighs the same (the
  look predicts no label), each origin in proportion to its size;
- `pretrain-finetune`: train on synthetic images, then fine-tune on real ones;
- `filter`: drop synthetic images that a classifier trained on the real images assigns to another
  class, then train as `balanced`; `filter-manifold` also drops those whose features fall
  outside the real images' manifold of their class;
- `signature`: the real training images passed through the generator's own autoencoder, so real
  and synthetic images share one look, then train as `balanced` (needs the autoencoder);
- `adversarial`: `balanced`, and an adversary learns real-vs-synthetic from the classifier's
  features through a reversed gradient, so the features stop carrying the look (domain-adversarial
  training). Measured on Kermany's 10%-viral protocol it gains what `balanced` gains: there the
  look no longer predicts a label, and what the synthetic images lack is content (docs/utility.md).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from conditioning.dataset import ConditionSchema

from .fit import FitConfig, encode_targets, fit, run_inference, seed_everything
from .images import ImageSet, to_tensor
from .metrics import inside_any_ball, knn_radii, label_indices
from .networks import ConditionNet

log = logging.getLogger(__name__)
FINETUNE_LR = 0.3  # fine-tuning after synthetic pretraining: this share of the recipe's lr
ADVERSARY_WEIGHT = 0.3  # `adversarial`: the reversed gradient's final scale (1.0 measured harmful)


@dataclass(frozen=True)
class Recipe:
    """How real and synthetic images are combined; recorded beside every result."""

    name: str
    # "class": inverse class frequency; "within-origin": classes equal within each origin,
    # origins by their size
    weighting: str = "class"
    pretrain: bool = False
    filter: bool = False
    signature: bool = False  # real images through the generator's autoencoder first
    description: str = ""
    manifold: bool = False  # filter: also drop images outside their class's real manifold
    adversary: float = 0.0  # > 0: an origin adversary through a reversed gradient of this scale

    def to_json(self) -> dict:
        """The recipe's fields; `manifold` and `adversary` only where they are on, so that the
        records of recipes measured before they existed still match (they are the same recipe)."""
        out = asdict(self)
        for late in ("manifold", "adversary"):
            if not out[late]:
                del out[late]
        return out


RECIPES = {
    r.name: r
    for r in (
        Recipe("mix", description="real + synthetic in one set, inverse class-frequency weights"),
        Recipe(
            "balanced",
            weighting="within-origin",
            description="real + synthetic, classes weighted equally within each origin, origins by size",
        ),
        Recipe(
            "pretrain-finetune",
            pretrain=True,
            description="train on synthetic, then fine-tune on real at "
            f"{FINETUNE_LR:g}x the learning rate",
        ),
        Recipe(
            "filter",
            weighting="within-origin",
            filter=True,
            description="drop synthetic images a real-trained classifier puts in another class, "
            "then balanced",
        ),
        Recipe(
            "filter-manifold",
            weighting="within-origin",
            filter=True,
            manifold=True,
            description="filter, and also drop synthetic images outside the real manifold of "
            "their class (k-NN balls in the judge's features)",
        ),
        Recipe(
            "signature",
            weighting="within-origin",
            signature=True,
            description="real images through the generator's autoencoder, then balanced",
        ),
        Recipe(
            "adversarial",
            weighting="within-origin",
            adversary=ADVERSARY_WEIGHT,
            description="balanced, and an origin adversary through a reversed gradient "
            "(domain-adversarial training)",
        ),
    )
}


@dataclass
class Trained:
    """A trained downstream classifier and what its recipe did."""

    model: ConditionNet
    info: dict


def new_classifier(n_classes: int, attribute: str, config: FitConfig) -> ConditionNet:
    seed_everything(config.seed)
    return ConditionNet({attribute: n_classes}, channels=config.channels)


def train_classifier(
    images: ImageSet,
    schema: ConditionSchema,
    attribute: str,
    config: FitConfig,
    *,
    model: ConditionNet | None = None,
    row_weights: np.ndarray | None = None,
    domains: tuple[np.ndarray, float] | None = None,
    desc: str = "classifier",
) -> ConditionNet:
    """Fit (or continue fitting) a one-head classifier on the rows with a known label;
    `domains` (origin index per row, adversary weight) adds a domain adversary."""
    known = [i for i, v in enumerate(images.values(attribute)) if v is not None]
    images = images.subset(known)
    model = model or new_classifier(len(schema[attribute].values), attribute, config)
    targets = encode_targets(images.conditions, schema, [attribute])
    if row_weights is not None:
        targets.row_weights = torch.as_tensor(row_weights[known]).float()
    if domains is not None:
        targets.domains = torch.as_tensor(domains[0][known]).long()
        targets.domain_weight = float(domains[1])
    fit(model, to_tensor(images.images), targets, config, desc=desc)
    return model


def predict(model: ConditionNet, images: ImageSet, attribute: str, size: int) -> np.ndarray:
    outputs, _ = run_inference(model, to_tensor(images.images, size))
    return outputs[attribute].softmax(1).numpy()


def origin_class_weights(labels: list, origins: list[str]) -> np.ndarray:
    """One weight per row, mean 1: within each origin every class carries the same total weight
    (so the origin's look predicts no label), and each origin carries weight in proportion to
    its size (so 300 synthetic images beside 4,000 real ones are not inflated to half the
    training signal)."""
    cells = Counter(zip(origins, labels, strict=True))
    size = Counter(origins)
    n_classes = Counter(origin for origin, _ in cells)
    weights = np.array(
        [size[o] / (n_classes[o] * cells[(o, y)]) for o, y in zip(origins, labels, strict=True)]
    )
    return weights * len(weights) / weights.sum()


def concat(a: ImageSet, b: ImageSet) -> ImageSet:
    if a.images.shape[1:] != b.images.shape[1:]:
        raise ValueError(
            f"image sizes differ: real {a.images.shape[1:]}, synthetic {b.images.shape[1:]}"
        )
    return ImageSet(
        np.concatenate([a.images, b.images]), a.conditions + b.conditions, a.ids + b.ids
    )


def screen(
    synthetic: ImageSet,
    judge: ConditionNet,
    real: ImageSet,
    schema: ConditionSchema,
    attribute: str,
    *,
    manifold: bool = False,
    k: int = 3,
) -> tuple[ImageSet, dict]:
    """The synthetic images a classifier trained on `real` (the judge) accepts: its most
    probable class is the requested one and, with `manifold`, its features lie inside the real
    images' manifold of that class (the union of k-NN balls, as in the precision metric).
    Returns the kept images and how many each rule dropped."""
    classes = schema[attribute].values
    size = synthetic.images.shape[-1]
    wanted = label_indices(synthetic.values(attribute), classes)
    outputs, syn_features = run_inference(judge, to_tensor(synthetic.images, size))
    agrees = (outputs[attribute].argmax(1).numpy() == wanted) & (wanted >= 0)
    inside = np.ones(len(synthetic), dtype=bool)
    if manifold:
        _, real_features = run_inference(judge, to_tensor(real.images, size))
        real_labels = label_indices(real.values(attribute), classes)
        inside = _inside_class_manifold(syn_features, wanted, real_features, real_labels, k)
    kept = synthetic.subset(np.flatnonzero(agrees & inside))
    report = {
        "offered": len(synthetic),
        "wrong_class": int((~agrees).sum()),
        "off_manifold": int((agrees & ~inside).sum()),  # right class, outside its real manifold
        "kept": len(kept),
    }
    return kept, report


def _inside_class_manifold(
    features: torch.Tensor, labels: np.ndarray, real: torch.Tensor, real_labels: np.ndarray, k: int
) -> np.ndarray:
    """For each row: are its features inside the union of k-NN balls of the real rows of its
    class? (False for a class with no more than k real rows: no manifold to be inside.)"""
    inside = np.zeros(len(features), dtype=bool)
    for c in np.unique(labels[labels >= 0]):
        mine, theirs = np.flatnonzero(labels == c), np.flatnonzero(real_labels == c)
        if len(theirs) > k:
            centres = real[torch.from_numpy(theirs)]
            hits = inside_any_ball(features[torch.from_numpy(mine)], centres, knn_radii(centres, k))
            inside[mine] = hits.numpy()
    return inside


def train_with_recipe(
    recipe: Recipe,
    real: ImageSet,
    synthetic: ImageSet,
    schema: ConditionSchema,
    attribute: str,
    config: FitConfig,
    *,
    judge: ConditionNet | None = None,
    signature: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Trained:
    """Train a classifier from real + synthetic images the recipe's way. `judge` (for `filter`)
    is a classifier trained on `real` alone; one is trained when none is given. `signature`
    (for `signature`) maps real images (N, H, W) to their autoencoder reconstructions."""
    info: dict = {"recipe": recipe.to_json(), "n_synthetic_offered": len(synthetic)}
    if recipe.signature:
        if signature is None:
            raise ValueError(f"recipe {recipe.name} needs the generator's autoencoder")
        real = ImageSet(signature(real.images), real.conditions, real.ids)
    if recipe.filter:
        judge = judge or train_classifier(real, schema, attribute, config, desc="filter judge")
        kept, report = screen(synthetic, judge, real, schema, attribute, manifold=recipe.manifold)
        info["filtered_share"] = 1 - len(kept) / max(len(synthetic), 1)
        info["filter"] = report
        log.info("filter: %s", report)
        synthetic = kept
    info["n_synthetic_used"] = len(synthetic)
    if recipe.pretrain:
        model = train_classifier(synthetic, schema, attribute, config, desc="pretrain synthetic")
        tune = replace(config, lr=config.lr * FINETUNE_LR)
        model = train_classifier(real, schema, attribute, tune, model=model, desc="fine-tune real")
        return Trained(model, info)
    both = concat(real, synthetic)
    weights = None
    if recipe.weighting == "within-origin":
        origins = ["real"] * len(real) + ["synthetic"] * len(synthetic)
        weights = origin_class_weights(both.values(attribute), origins)
    elif recipe.weighting != "class":
        raise ValueError(f"recipe {recipe.name}: unknown weighting {recipe.weighting!r}")
    domains = None
    if recipe.adversary > 0:
        domains = (np.r_[np.zeros(len(real), int), np.ones(len(synthetic), int)], recipe.adversary)
    model = train_classifier(
        both, schema, attribute, config, row_weights=weights, domains=domains, desc=recipe.name
    )
    return Trained(model, info)
