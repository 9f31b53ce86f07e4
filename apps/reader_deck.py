"""The blinded deck of a reader study: real TEST-split images and synthetic ones, shuffled, each
known to the reader only by its picture (same display size and bit depth for both origins)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conditioning.dataset import CATEGORICAL, Dataset, SyntheticSet

from .viewer import FULL_WINDOW, ZOOMS, to_grey_levels, view_png

DISPLAY = 256


@dataclass(frozen=True)
class DeckItem:
    item: str  # "real:<record id>" or "synthetic:<image id>": stored, never shown
    origin: str
    index: int  # position in the test split or in the synthetic set
    condition: str


def condition_attribute(dataset: Dataset) -> str | None:
    """Accuracy is broken down by the dataset's first categorical attribute (e.g. pathology)."""
    for attribute in dataset.schema.attributes:
        if attribute.kind == CATEGORICAL:
            return attribute.name
    return None


def _label(value) -> str:
    return "unknown" if value in (None, "") else str(value)


def build_deck(
    dataset: Dataset, synthetic: SyntheticSet, per_origin: int, seed: int
) -> list[DeckItem]:
    """Up to `per_origin` test images and as many synthetic ones, in a seeded random order."""
    if per_origin < 1:
        raise ValueError("a reading session needs at least one image per origin")
    test = dataset.split("test")
    if not test:
        raise ValueError(f"{dataset.root}: the dataset has no test-split image to show")
    shown = synthetic.load_image(synthetic.images[0]).shape if synthetic.images else None
    if shown is not None and list(shown[-2:]) != list(dataset.image_size[-2:]):
        raise ValueError(
            f"{synthetic.root}: images of {'x'.join(map(str, shown))} px against the dataset's "
            f"{'x'.join(map(str, dataset.image_size))}: a reader would tell the origins apart by "
            "size; choose the set's own dataset"
        )
    name = condition_attribute(dataset)
    rng = np.random.default_rng(seed)
    k = min(per_origin, len(test), len(synthetic.images))
    real_idx = rng.choice(len(test), k, replace=False)
    syn_idx = rng.choice(len(synthetic.images), k, replace=False)
    deck = [
        DeckItem(
            f"real:{test[i].id}",
            "real",
            int(i),
            _label(test[i].conditions.get(name) if name else None),
        )
        for i in real_idx
    ]
    deck += [
        DeckItem(
            f"synthetic:{synthetic.images[i].id}",
            "synthetic",
            int(i),
            _label(synthetic.images[i].conditions.get(name) if name else None),
        )
        for i in syn_idx
    ]
    return [deck[i] for i in rng.permutation(len(deck))]


def item_pixels(dataset: Dataset, synthetic: SyntheticSet, item: DeckItem) -> np.ndarray:
    if item.origin == "real":
        return dataset.load_image(dataset.split("test")[item.index])
    return synthetic.load_image(synthetic.images[item.index])


def display_png(image01: np.ndarray, size: int = DISPLAY) -> bytes:
    """Both origins rendered alike, at the set's own resolution: the middle slice of a volume,
    8-bit, each pixel drawn as a block (nearest neighbour) of the whole-number zoom that brings
    the side closest to `size` without exceeding it (1x for images already that large)."""
    grey = to_grey_levels(image01)
    zoom = max(z for z in ZOOMS if z == 1 or z * max(grey.shape) <= size)
    return view_png(grey, *FULL_WINDOW, zoom)
