"""Scarce-class subsets: keep only a share of one class's images in one split.

One seeded choice serves both the dataset written here (to train a generator that saw only the
kept images) and the utility benchmark's scarce regime, so the two see exactly the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .format import Dataset
from .writer import DatasetSpec, DatasetWriter


def choose_kept(
    ids: Sequence[str], labels: Sequence[object], value: object, fraction: float, seed: int
) -> set[str]:
    """Ids of the images labelled `value` that are kept: round(fraction * n), at least one,
    drawn with `seed` from the ids in sorted order (so the input order does not matter)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    target = sorted(i for i, v in zip(ids, labels, strict=True) if v == value)
    if not target:
        raise ValueError(f"no image is labelled {value!r}")
    if fraction >= 1:
        return set(target)
    count = max(1, round(fraction * len(target)))
    rng = np.random.default_rng(seed)
    return {target[i] for i in rng.choice(len(target), size=count, replace=False)}


@dataclass(frozen=True)
class SubsetRule:
    """Which images a scarce-class subset keeps: in `split`, `fraction` of those whose
    `attribute` is `value` (as written; the schema parses it), drawn with `seed`, the seed
    `radsynth bench utility --subset-seed` names to draw the same images."""

    attribute: str
    value: str
    fraction: float
    split: str = "train"
    seed: int = 0


def write_subset(
    dataset: Dataset,
    out: str | Path,
    rule: SubsetRule,
    *,
    name: str | None = None,
    overwrite: bool = False,
) -> Dataset:
    """A new dataset equal to `dataset` except that, in the rule's split, only the images it
    keeps of its class remain. Other splits are copied whole, so test scores stay comparable.
    Ids are renumbered; dataset.json's ingest_report records the parent and the rule."""
    attribute, value, fraction = rule.attribute, rule.value, rule.fraction
    split, seed = rule.split, rule.seed
    if attribute not in dataset.schema:
        raise DatasetError(
            dataset.root,
            f"no attribute {attribute!r}; attributes are {', '.join(dataset.schema.names)}",
        )
    parsed = dataset.schema[attribute].parse(value)
    records = dataset.split(split)
    kept = choose_kept(
        [r.id for r in records],
        [r.conditions.get(attribute) for r in records],
        parsed,
        fraction,
        seed,
    )
    dropped = {r.id for r in records if r.conditions.get(attribute) == parsed} - kept
    rule = {
        "parent": dataset.name,
        "parent_hash": dataset.content_hash(),
        "split": split,
        "attribute": attribute,
        "value": parsed,
        "fraction": fraction,
        "seed": seed,
        "kept": len(kept),
        "dropped": len(dropped),
    }
    return _write_without(
        dataset,
        out,
        dropped,
        name or f"{dataset.name}-{value}{fraction * 100:g}pct",
        rule,
        overwrite,
    )


def write_split_sample(
    dataset: Dataset,
    out: str | Path,
    *,
    count: int,
    split: str = "train",
    seed: int = 0,
    name: str | None = None,
    overwrite: bool = False,
) -> Dataset:
    """A new dataset whose `split` keeps only `count` images, one per patient, drawn with `seed`
    (other splits copied whole): a tiny training set a generator can memorise."""
    records = dataset.split(split)
    first: dict[str, str] = {}
    for r in sorted(records, key=lambda r: r.id):
        first.setdefault(r.patient_id, r.id)
    if not 0 < count <= len(first):
        raise ValueError(f"count must lie in 1..{len(first)} (patients in {split!r}), got {count}")
    ids = sorted(first.values())
    rng = np.random.default_rng(seed)
    kept = {ids[i] for i in rng.choice(len(ids), size=count, replace=False)}
    dropped = {r.id for r in records} - kept
    rule = {
        "parent": dataset.name,
        "parent_hash": dataset.content_hash(),
        "split": split,
        "sample": count,
        "seed": seed,
        "kept": len(kept),
        "dropped": len(dropped),
    }
    return _write_without(
        dataset, out, dropped, name or f"{dataset.name}-{split}{count}", rule, overwrite
    )


def _write_without(
    dataset: Dataset, out: str | Path, dropped: set[str], name: str, rule: dict, overwrite: bool
) -> Dataset:
    info = dataset.info
    spec = DatasetSpec(
        name=name,
        modality=info["modality"],
        dimensionality=info["dimensionality"],
        image_size=info["image_size"],
        bit_depth=info["bit_depth"],
        schema=dataset.schema,
        has_masks=dataset.has_masks,
        has_origin=bool(info.get("has_origin")),
    )
    with DatasetWriter(out, spec, overwrite=overwrite) as writer:
        for record in dataset.records:
            if record.id in dropped:
                continue
            writer.copy(dataset, record)
        return writer.commit(
            intensity=info.get("intensity", {}),
            ingest_report={"subset": rule},
        )
