"""Helpers that write small synthetic sets in the layout `radsynth generate` produces."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from conditioning.dataset.pixels import write_png


def write_synthetic_set(
    out: Path,
    labels: list[str],
    *,
    size: int = 16,
    seed: int = 0,
    attribute: str = "pathology",
    extra: dict[str, list] | None = None,
) -> Path:
    """images/syn*.png + manifest.csv with one condition column per attribute."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    columns = [
        "id",
        "file",
        attribute,
        *extra,
        "seed",
        "sampler",
        "steps",
        "guidance",
        "model_hash",
    ]
    with (out / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i, label in enumerate(labels):
            image_id = f"syn{i:06d}"
            write_png(
                out / "images" / f"{image_id}.png",
                rng.integers(0, 256, (size, size), dtype=np.uint8),
            )
            values = [extra[k][i] for k in extra]
            writer.writerow(
                [
                    image_id,
                    f"images/{image_id}.png",
                    label,
                    *values,
                    seed * 1000 + i,
                    "dpm++",
                    20,
                    2.0,
                    "ab" * 32,
                ]
            )
    return out
