"""Helpers that write small synthetic sets in the layout `radsynth generate` produces."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from conditioning.dataset import quantize
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


IMAGE_SET_COLUMNS = [
    "id",
    "file",
    "pathology",
    "age_months",
    "seed",
    "sampler",
    "steps",
    "guidance",
    "model_hash",
]


def write_image_set(out: Path, images: list[np.ndarray], conditions: list[dict]) -> Path:
    """A synthetic set holding the given images (pathology and age_months columns)."""
    (out / "images").mkdir(parents=True)
    with (out / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=IMAGE_SET_COLUMNS)
        writer.writeheader()
        for i, (image, cond) in enumerate(zip(images, conditions, strict=True)):
            rel = f"images/syn{i:05d}.png"
            write_png(out / rel, quantize(image, 8))
            writer.writerow(
                {
                    "id": f"syn{i:05d}",
                    "file": rel,
                    "pathology": cond.get("pathology") or "",
                    "age_months": "" if cond.get("age_months") is None else cond["age_months"],
                    "seed": i,
                    "sampler": "dpm++",
                    "steps": 20,
                    "guidance": 2.0,
                    "model_hash": "0" * 64,
                }
            )
    return out
