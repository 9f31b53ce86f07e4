"""Images as the evaluation sees them: float32 arrays (N, H, W) in [0, 1] with their conditions,
read from a dataset split (through `load_dataset`) or from a synthetic set written by
`radsynth generate` (images/*.png + manifest.csv)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from conditioning.dataset import ConditionSchema, Dataset, DatasetError
from conditioning.dataset import load_synthetic_set as read_synthetic_set

SYNTHETIC_MANIFEST = "manifest.csv"


@dataclass
class ImageSet:
    """Images (N, H, W) float32 in [0, 1] and one condition dict per image (None = unknown)."""

    images: np.ndarray
    conditions: list[dict[str, str | float | None]]
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray | list[int]) -> ImageSet:
        index = list(index)
        return ImageSet(
            self.images[index],
            [self.conditions[i] for i in index],
            [self.ids[i] for i in index] if self.ids else [],
        )

    def values(self, name: str) -> list[str | float | None]:
        return [c.get(name) for c in self.conditions]


def require_2d(dataset: Dataset) -> None:
    if dataset.dimensionality != "2D":
        raise DatasetError(
            dataset.root, "evaluation works on 2D datasets; this one is 3D (slice it at ingest)"
        )


def load_split(dataset: Dataset, split: str) -> ImageSet:
    """Every image of one split of a validated 2D dataset."""
    require_2d(dataset)
    records = dataset.split(split)
    if not records:
        raise DatasetError(dataset.root, f"split {split!r} holds no image")
    images = np.stack([dataset.load_image(r) for r in records]).astype(np.float32)
    return ImageSet(images, [dict(r.conditions) for r in records], [r.id for r in records])


def load_synthetic_set(directory: str | Path, schema: ConditionSchema) -> ImageSet:
    """Read a synthetic set through `conditioning.dataset.load_synthetic_set` (a generated set
    with manifest.csv, or a plain PNG folder whose images then count as unconditioned) and parse
    its condition columns against `schema` (a missing column or empty cell: unconditioned)."""
    synthetic = read_synthetic_set(directory)
    manifest = Path(directory) / SYNTHETIC_MANIFEST
    conditions = []
    for line, item in enumerate(synthetic.images, start=2):
        parsed: dict[str, str | float | None] = {}
        for attribute in schema.attributes:
            try:
                parsed[attribute.name] = attribute.parse(item.conditions.get(attribute.name))
            except ValueError as exc:
                raise DatasetError(manifest, f"line {line}: {exc}") from None
        conditions.append(parsed)
    images = synthetic.load_all().astype(np.float32)
    return ImageSet(images, conditions, [item.id for item in synthetic.images])


def to_tensor(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """(N, H, W) array to (N, 1, S, S) float tensor, resized (antialiased) when `size` differs."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    if size is not None and tuple(tensor.shape[-2:]) != (size, size):
        tensor = torch.nn.functional.interpolate(
            tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        ).clamp(0.0, 1.0)
    return tensor
