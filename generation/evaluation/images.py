"""Images as the evaluation sees them: float32 arrays (N, H, W) in [0, 1] with their conditions,
read from a dataset split (through `load_dataset`) or from a synthetic set written by
`radsynth generate` (images/*.png + manifest.csv)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from conditioning.dataset import ConditionSchema, Dataset, DatasetError
from conditioning.dataset.pixels import read_png, to_unit_range

SYNTHETIC_MANIFEST = "manifest.csv"
SYNTHETIC_REQUIRED = ("id", "file")


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
    """Read a synthetic set: manifest.csv with columns id, file, one per condition requested
    (a missing column or empty cell means unconditioned), then generation metadata."""
    root = Path(directory)
    manifest = root / SYNTHETIC_MANIFEST
    if not manifest.is_file():
        raise DatasetError(manifest, "missing: not a synthetic set written by `radsynth generate`")
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in SYNTHETIC_REQUIRED if c not in header]
        if missing:
            raise DatasetError(manifest, f"missing column(s) {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise DatasetError(manifest, "lists no image")
    conditions, files, ids = [], [], []
    for line, row in enumerate(rows, start=2):  # the whole manifest first, then the pixels
        rel = (row.get("file") or "").strip()
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise DatasetError(manifest, f"line {line}: file {rel!r} must be a relative path")
        parsed: dict[str, str | float | None] = {}
        for attribute in schema.attributes:
            try:
                parsed[attribute.name] = attribute.parse(row.get(attribute.name))
            except ValueError as exc:
                raise DatasetError(manifest, f"line {line}: {exc}") from None
        conditions.append(parsed)
        files.append(root / rel)
        ids.append(row.get("id") or f"row{line}")
    images = []
    for path in files:
        pixels = read_png(path)
        if images and pixels.shape != images[0].shape:
            raise DatasetError(path, f"shape {pixels.shape} differs from {images[0].shape}")
        images.append(to_unit_range(pixels))
    return ImageSet(np.stack(images).astype(np.float32), conditions, ids)


def to_tensor(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """(N, H, W) array to (N, 1, S, S) float tensor, resized (antialiased) when `size` differs."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    if size is not None and tuple(tensor.shape[-2:]) != (size, size):
        tensor = torch.nn.functional.interpolate(
            tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        ).clamp(0.0, 1.0)
    return tensor
