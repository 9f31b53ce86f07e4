"""Small image helpers for the pages: PNG bytes for display, a zip of a generated set, and the
condition lists of a one-attribute sweep."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from conditioning.dataset import CATEGORICAL, Attribute, quantize


def png_bytes(image01: np.ndarray) -> bytes:
    """An (H, W) float image in [0, 1] (a 3D volume: its middle slice) as an 8-bit PNG."""
    from PIL import Image

    array = np.asarray(image01, dtype=np.float32)
    if array.ndim == 3:
        array = array[array.shape[0] // 2]
    buffer = io.BytesIO()
    Image.fromarray(quantize(array, 8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def zip_directory(directory: Path) -> bytes:
    """Every non-hidden file under `directory`, with paths relative to it, as zip bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = path.relative_to(directory)
            if any(part.startswith(".") for part in rel.parts):
                continue
            archive.write(path, rel.as_posix())
    return buffer.getvalue()


def sweep_values(attribute: Attribute, start: float = 0.0, stop: float = 0.0, count: int = 5):
    """Every class of a categorical attribute, or `count` evenly spaced values start..stop."""
    if attribute.kind == CATEGORICAL:
        return list(attribute.values)
    if count < 2:
        raise ValueError("a sweep needs at least 2 values")
    return [float(round(v, 2)) for v in np.linspace(start, stop, count)]


def sweep_conditions(base: dict[str, Any], name: str, values: list) -> list[dict[str, Any]]:
    """The base request with attribute `name` set to each value in turn."""
    return [{**base, name: value} for value in values]
