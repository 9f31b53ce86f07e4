"""Merging a synthetic release into a real dataset's training split.

The result is an ordinary RadSynth dataset (validated like any other) whose manifest has an
`origin` column (real / synthetic). Real val and test splits are kept as they are, so a model
trained on the augmented train split is still judged on real patients only.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conditioning.dataset import (
    CATEGORICAL,
    DatasetSpec,
    DatasetWriter,
    load_dataset,
    load_synthetic_set,
    quantize,
)

log = logging.getLogger(__name__)
BALANCE = ("none", "equal")
# how the merged set is meant to be trained on (generation/evaluation/recipes.py measures them)
AUGMENT_RECIPES = ("mix", "balanced", "pretrain-finetune", "filter")


@dataclass
class AugmentPlan:
    """How many synthetic images of each class go into the training split."""

    per_class: dict[str, int]
    attribute: str | None
    real_train: int

    @property
    def total(self) -> int:
        return sum(self.per_class.values())


def plan_mix(
    real_counts: dict[str, int],
    available: dict[str, int],
    synthetic_fraction: float | None,
    balance: str,
) -> dict[str, int]:
    """Synthetic images to add per class.

    - `synthetic_fraction` F: synthetic images make up F of the final training split.
    - `balance="equal"`: add to each class up to the largest real class (the rare class first),
      within the fraction's budget when one is given.
    Never more than is available; a shortfall is logged.
    """
    if balance not in BALANCE:
        raise ValueError(f"balance {balance!r}: choose from {', '.join(BALANCE)}")
    if synthetic_fraction is not None and not 0 <= synthetic_fraction < 1:
        raise ValueError(f"synthetic fraction {synthetic_fraction} must be in [0, 1)")
    n_real = sum(real_counts.values())
    budget = None
    if synthetic_fraction is not None:
        budget = int(round(synthetic_fraction / (1 - synthetic_fraction) * n_real))
    if balance == "equal":
        target = max(real_counts.values(), default=0)
        wanted = {c: max(0, target - real_counts.get(c, 0)) for c in available}
    else:
        if budget is None:
            raise ValueError("give --synthetic-fraction, or --balance equal")
        total_available = sum(available.values()) or 1
        wanted = {c: int(round(budget * n / total_available)) for c, n in available.items()}
    plan = {c: min(wanted[c], available[c]) for c in available}
    if budget is not None and sum(plan.values()) > budget:
        # trim the classes that got most, keeping the rare classes' share
        order = sorted(plan, key=lambda c: real_counts.get(c, 0) + plan[c], reverse=True)
        excess = sum(plan.values()) - budget
        while excess > 0:
            for c in order:
                if excess and plan[c] > 0:
                    plan[c] -= 1
                    excess -= 1
    for c in plan:
        if plan[c] < wanted[c] and (budget is None):
            log.warning(
                "class %s: asked for %d synthetic images, release has %d",
                c,
                wanted[c],
                available[c],
            )
    return plan


@dataclass(frozen=True)
class AugmentOptions:
    """How the synthetic images are chosen (`plan_mix`) and the recipe the set is meant for."""

    synthetic_fraction: float | None = None
    balance: str = "none"
    attribute: str | None = None
    seed: int = 0
    recipe: str = "balanced"


def augment(
    release_dir: str | Path,
    dataset_dir: str | Path,
    out: str | Path,
    options: AugmentOptions | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write `out`: the real dataset with synthetic images of the release added to its train
    split, planned by `synthetic_fraction` / `balance`, and the training recipe recorded in
    dataset.json (`ingest_report.recipe`; `training_weights` reads it back). `filter` drops
    synthetic images that a classifier trained on the real train split puts in another class."""
    options = options or AugmentOptions()
    if options.recipe not in AUGMENT_RECIPES:
        raise ValueError(f"recipe {options.recipe!r}: choose from {', '.join(AUGMENT_RECIPES)}")
    dataset = load_dataset(dataset_dir)
    release = load_synthetic_set(release_dir)
    attribute = _augment_attribute(dataset, options.attribute)
    if dataset.dimensionality != "2D":
        raise ValueError(f"{dataset.root}: augment handles 2D datasets")
    train = dataset.split("train")
    real_counts = Counter(_class_key(r.conditions, attribute) for r in train)
    pool: dict[str, list] = {}
    for item in release.images:
        parsed = dataset.schema.validate_request(
            {k: v for k, v in item.conditions.items() if k in dataset.schema}
        )
        pool.setdefault(_class_key(parsed, attribute), []).append((item, parsed))
    filtered = None
    if options.recipe == "filter":
        pool, filtered = _filter_pool(pool, release, dataset, attribute)
    plan = plan_mix(
        dict(real_counts),
        {c: len(v) for c, v in pool.items()},
        options.synthetic_fraction,
        options.balance,
    )
    rng = np.random.default_rng(options.seed)
    chosen = []
    for c in sorted(plan):
        picks = rng.permutation(len(pool[c]))[: plan[c]]
        chosen += [pool[c][i] for i in sorted(picks)]
    report = {
        "synthetic_added": {c: n for c, n in sorted(plan.items())},
        "synthetic_fraction_of_train": round(len(chosen) / max(1, len(train) + len(chosen)), 4),
        "balance": options.balance,
        "attribute": attribute,
        "seed": options.seed,
        "recipe": {"name": options.recipe, **({"filtered": filtered} if filtered else {})},
    }
    root = _write_augmented(out, dataset, release, chosen, report, overwrite)
    log.info("augmented dataset: %d real + %d synthetic training images", len(train), len(chosen))
    return root


def _augment_attribute(dataset, attribute: str | None) -> str | None:
    """The categorical condition the plan counts by (default: the first; None when none)."""
    schema = dataset.schema
    if attribute is None:
        return next((a.name for a in schema.attributes if a.kind == CATEGORICAL), None)
    if attribute not in schema or schema[attribute].kind != CATEGORICAL:
        raise ValueError(
            f"--attribute {attribute!r} is not a categorical condition of {dataset.root}"
        )
    return attribute


def _class_key(conditions, attribute: str | None) -> str:
    return str(conditions.get(attribute)) if attribute else "all"


def _write_augmented(out, dataset, release, chosen: list, report: dict, overwrite: bool):
    """Every real record, then the chosen synthetic images in the train split; `report` goes
    into dataset.json's ingest_report after where the set came from."""
    bit_depth = dataset.info["bit_depth"]
    with DatasetWriter(
        out,
        DatasetSpec(
            name=f"{dataset.name}+synthetic",
            modality=dataset.info["modality"],
            dimensionality="2D",
            image_size=dataset.image_size,
            bit_depth=bit_depth,
            schema=dataset.schema,
            has_masks=dataset.has_masks,
            has_origin=True,
        ),
        overwrite=overwrite,
    ) as writer:
        for record in dataset.records:
            writer.copy(dataset, record, origin="real")
        for index, (item, conditions) in enumerate(chosen):
            image = release.load_image(item)
            if list(image.shape) != dataset.image_size:
                raise ValueError(
                    f"{release.root / item.file}: size {image.shape} differs from dataset {dataset.image_size}"
                )
            mask = release.load_mask(item) if dataset.has_masks else None
            if dataset.has_masks and mask is None:
                raise ValueError(
                    f"{release.root / item.file}: the dataset has masks, the synthetic image has none"
                )
            writer.add(
                quantize(image, bit_depth),
                split="train",
                patient_id=f"synthetic-{index:06d}",
                conditions=conditions,
                mask=mask,
                origin="synthetic",
            )
        source = {"dataset_sha256": dataset.content_hash(), "dataset_name": dataset.name}
        result = writer.commit(
            intensity=dataset.info["intensity"],
            ingest_report={"augmented_from": source, **report},
        )
    return result.root


def _filter_pool(pool: dict, release, dataset, attribute: str | None) -> tuple[dict, dict]:
    """Keep the synthetic images that a classifier trained on the real train split assigns to
    their requested class (the `filter` recipe); returns the kept pool and the counts."""
    from generation.evaluation import FitConfig
    from generation.evaluation.images import ImageSet, load_split
    from generation.evaluation.recipes import screen, train_classifier

    if attribute is None:
        raise ValueError("the filter recipe needs a categorical attribute to check")
    real = load_split(dataset, "train")
    judge = train_classifier(real, dataset.schema, attribute, FitConfig())
    kept: dict[str, list] = {}
    for value, entries in pool.items():
        images = np.stack([release.load_image(item) for item, _ in entries]).astype(np.float32)
        candidates = ImageSet(
            images, [c for _, c in entries], [str(i) for i in range(len(entries))]
        )
        good, _ = screen(candidates, judge, real, dataset.schema, attribute)
        kept[value] = [entries[int(i)] for i in good.ids]
    offered = sum(len(v) for v in pool.values())
    left = sum(len(v) for v in kept.values())
    log.info("filter: %d of %d synthetic images kept", left, offered)
    return kept, {
        "offered": offered,
        "kept": left,
        "dropped_share": round(1 - left / max(offered, 1), 4),
    }


def training_weights(dataset, split: str = "train") -> np.ndarray:
    """One loss weight per record of `split` for the recipe recorded by `augment`: for
    `balanced` and `filter`, classes weigh the same within each origin (so the synthetic look
    predicts no label), origins by size; otherwise 1 everywhere (mean 1 in both cases)."""
    records = dataset.split(split)
    report = dataset.info.get("ingest_report", {})
    name = (report.get("recipe") or {}).get("name", "mix")
    if name not in ("balanced", "filter"):
        return np.ones(len(records))
    attribute = report.get("attribute")
    from generation.evaluation.recipes import origin_class_weights

    return origin_class_weights(
        [r.conditions.get(attribute) for r in records], [r.origin for r in records]
    )
