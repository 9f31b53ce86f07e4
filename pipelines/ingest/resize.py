"""Resizing to the dataset's grid: antialiased Lanczos for images (PIL works on float32 'F'
images), area coverage for masks; the aspect ratio is kept by padding unless asked otherwise.

Where the source gives pixel spacing, the aspect ratio is the physical one, and
`resized_spacing` gives the spacing of the stored pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

ASPECTS = ("pad", "crop", "stretch")
RESAMPLE = "lanczos (antialiased on downsampling); masks: area coverage >= 0.5"


def _resample(plane: np.ndarray, height: int, width: int, mask: bool) -> np.ndarray:
    if plane.shape == (height, width):
        return plane.copy()
    if mask:  # area coverage >= 1/2: thin structures survive downsampling, unlike nearest
        image = Image.fromarray((plane > 0).astype(np.float32), mode="F")
        covered = np.asarray(image.resize((width, height), Image.Resampling.BOX))
        return (covered >= 0.5).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    out = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)  # Lanczos overshoots at hard edges


def _fit(
    height: int, width: int, size: int, aspect: str, spacing: Sequence[float] | None
) -> tuple[int, int]:
    """The in-plane size to resample to before padding or cropping to size x size."""
    if aspect == "stretch":
        return size, size
    sy, sx = (float(spacing[-2]), float(spacing[-1])) if spacing else (1.0, 1.0)
    if not (sy > 0 and sx > 0):
        sy = sx = 1.0
    ph, pw = height * sy, width * sx
    scale = size / (max(ph, pw) if aspect == "pad" else min(ph, pw))
    fit = lambda n: max(1, int(round(n * scale)))  # noqa: E731
    return (
        (min(size, fit(ph)), min(size, fit(pw)))
        if aspect == "pad"
        else (
            max(size, fit(ph)),
            max(size, fit(pw)),
        )
    )


def _pad_or_crop(plane: np.ndarray, size: int) -> np.ndarray:
    h, w = plane.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    plane = plane[top : top + size, left : left + size]
    h, w = plane.shape
    if (h, w) == (size, size):
        return plane
    out = np.zeros((size, size), dtype=plane.dtype)  # padding is black (0 after normalisation)
    y, x = (size - h) // 2, (size - w) // 2
    out[y : y + h, x : x + w] = plane
    return out


def resize_2d(
    image: np.ndarray,
    size: int,
    aspect: str = "pad",
    spacing: Sequence[float] | None = None,
    mask: bool = False,
) -> np.ndarray:
    """A (H, W) image in [0, 1] (or a mask) to (size, size)."""
    if aspect not in ASPECTS:
        raise ValueError(f"aspect {aspect!r} is not one of {', '.join(ASPECTS)}")
    height, width = _fit(*image.shape, size, aspect, spacing)
    return _pad_or_crop(_resample(image, height, width, mask), size)


def resized_spacing(
    shape: Sequence[int],
    size: int,
    aspect: str,
    spacing: Sequence[float] | None,
    depth: int | None = None,
) -> tuple[float, ...] | None:
    """The spacing (mm) of the pixels `resize_2d` (2D `shape`) or `resize_3d` (3D `shape`, depth
    resampled to `depth` unless None) store: the source spacing times each axis's resize factor.
    None when the source gave none, or one that is not positive and finite (nothing invented)."""
    if spacing is None or len(spacing) < len(shape):
        return None
    values = tuple(float(s) for s in spacing[-len(shape) :])
    if not all(math.isfinite(v) and v > 0 for v in values):
        return None
    height, width = shape[-2:]
    fit_height, fit_width = _fit(height, width, size, aspect, values)
    in_plane = (values[-2] * height / fit_height, values[-1] * width / fit_width)
    if len(shape) == 2:
        return in_plane
    return (values[0] * shape[0] / (shape[0] if depth is None else depth), *in_plane)


def resize_depth(volume: np.ndarray, depth: int, mask: bool = False) -> np.ndarray:
    """Resample axis 0 of a (D, H, W) volume to `depth` slices (each (D, W) plane at a time)."""
    if volume.shape[0] == depth:
        return volume
    planes = [
        _resample(volume[:, row, :], depth, volume.shape[2], mask) for row in range(volume.shape[1])
    ]
    return np.stack(planes, axis=1)


def resize_3d(
    volume: np.ndarray,
    size: int,
    depth: int | None,
    aspect: str = "pad",
    spacing: Sequence[float] | None = None,
    mask: bool = False,
) -> np.ndarray:
    """A (D, H, W) volume to (depth, size, size): in-plane like `resize_2d`, then along depth
    (kept when `depth` is None)."""
    planes = np.stack([resize_2d(s, size, aspect, spacing, mask) for s in volume])
    return planes if depth is None else resize_depth(planes, depth, mask)
