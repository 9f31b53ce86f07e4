"""Sample grids: a PNG a person can look at to judge a checkpoint (one row per class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conditioning.dataset import atomic_open


def save_grid(
    path: str | Path, rows: list[np.ndarray], labels: list[str] | None = None, pad: int = 2
) -> Path:
    """rows: arrays (n, H, W) in [0, 1] (3D volumes: their middle slice); written atomically.
    Labels, if given, are drawn at the left of each row."""
    from PIL import Image, ImageDraw

    rows = [_as_2d(r) for r in rows]
    h, w = rows[0].shape[1:]
    columns = max(len(r) for r in rows)
    label_width = 0
    if labels:
        label_width = 7 * max(len(s) for s in labels) + 6
    canvas = np.ones(
        (len(rows) * (h + pad) + pad, label_width + columns * (w + pad) + pad), np.float32
    )
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = pad + i * (h + pad), label_width + pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = np.clip(image, 0, 1)
    picture = Image.fromarray(np.rint(canvas * 255).astype(np.uint8), mode="L")
    if labels:
        draw = ImageDraw.Draw(picture)
        for i, label in enumerate(labels):
            draw.text((3, pad + i * (h + pad) + h // 2 - 5), label, fill=0)
    with atomic_open(path, "wb") as handle:
        picture.save(handle, format="PNG")
    return path


def _as_2d(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4:  # (n, D, H, W): middle slice
        images = images[:, images.shape[1] // 2]
    return images


def grid_conditions(schema, columns: int) -> tuple[list[list[dict]], list[str]]:
    """One row per value of the first categorical attribute (others unconditioned), or a single
    unconditioned row when there is none."""
    from conditioning.dataset import CATEGORICAL

    for attribute in schema.attributes:
        if attribute.kind == CATEGORICAL:
            return (
                [[{attribute.name: v}] * columns for v in attribute.values],
                list(attribute.values),
            )
    return [[{}] * columns], ["any"]
