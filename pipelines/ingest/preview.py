"""A contact sheet of an ingested dataset (preview.png inside it): a person checks at a glance
that labels, orientation, intensity and padding look right."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conditioning.dataset import CATEGORICAL, Dataset
from conditioning.dataset.pixels import write_png

PREVIEW = "preview.png"


def _picture(dataset: Dataset, record) -> np.ndarray:
    image = dataset.load_image(record)
    return image[image.shape[0] // 2] if image.ndim == 3 else image  # a volume: middle slice


def write_preview(dataset: Dataset, path: Path, per_row: int = 8) -> str:
    """One row per value of the first categorical attribute (else three rows), the first train
    images (any split when train is empty); 8-bit grey PNG. Returns what the rows show."""
    records = dataset.split("train") or dataset.records
    label = next((a for a in dataset.schema.attributes if a.kind == CATEGORICAL), None)
    if label is None:
        rows = [records[i : i + per_row] for i in range(0, min(len(records), 3 * per_row), per_row)]
        legend = "rows: first train images"
    else:
        by_value = [
            (v, [r for r in records if r.conditions.get(label.name) == v][:per_row])
            for v in label.values
        ]
        rows = [row for _, row in by_value if row]
        legend = f"rows ({label.name}): {', '.join(v for v, row in by_value if row)}"
    height, width = _picture(dataset, rows[0][0]).shape
    gap = 2
    sheet = np.ones((len(rows) * (height + gap) - gap, per_row * (width + gap) - gap), np.float32)
    for y, row in enumerate(rows):
        for x, record in enumerate(row):
            top, left = y * (height + gap), x * (width + gap)
            sheet[top : top + height, left : left + width] = _picture(dataset, record)
    write_png(path, np.rint(sheet * 255).astype(np.uint8))
    return legend
