"""Pixel spacing of stored images, in mm: how the manifest writes and reads it, and the one value
that stands for a dataset's images (what the DICOM export of a synthetic set may claim).

A spacing is (row, column) for a 2D image and (slice, row, column) for a 3D one, the spacing of
the stored (resized) pixels. Images whose source gave none have none: nothing is invented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPACING_COLUMN = "spacing_mm"  # manifest column, only when dataset.json has_spacing: true
# A dataset has one spacing when at least SHARE of its images lie within TOLERANCE of the median
TOLERANCE = 0.10
SHARE = 0.95


def check_spacing(values: Sequence, ndim: int) -> tuple[float, ...]:
    """`values` as floats when they are `ndim` positive finite numbers; ValueError otherwise."""
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        floats = ()
    if len(floats) != ndim or not all(math.isfinite(v) and v > 0 for v in floats):
        shown = " ".join(map(str, values)) if isinstance(values, list | tuple) else str(values)
        axes = "row, column" if ndim == 2 else "slice, row, column"
        raise ValueError(
            f"{SPACING_COLUMN} {shown!r} must be {ndim} positive finite numbers in mm "
            f"({axes}) separated by spaces"
        )
    return floats


def parse_spacing(text: str | None, ndim: int) -> tuple[float, ...] | None:
    """A manifest cell: empty is no spacing; otherwise `ndim` numbers separated by spaces."""
    raw = (text or "").strip()
    if not raw:
        return None
    return check_spacing(raw.split(), ndim)


def format_spacing(spacing: Sequence[float] | None) -> str:
    """The manifest cell of a spacing (6 significant digits, like continuous conditions)."""
    return "" if spacing is None else " ".join(f"{float(v):.6g}" for v in spacing)


@dataclass(frozen=True)
class TypicalSpacing:
    """The spacing that stands for a set of images (`mm`, None when there is none) and why."""

    mm: tuple[float, ...] | None
    note: str


def typical_spacing(spacings: Sequence[Sequence[float] | None]) -> TypicalSpacing:
    """The per-axis median of the images' spacings, when at least SHARE of all the images have a
    spacing within TOLERANCE of it on every axis; otherwise none, with the reason."""
    if not spacings:
        return TypicalSpacing(None, "no image")
    known = np.array([s for s in spacings if s is not None], dtype=float)
    total = len(spacings)
    if len(known) < SHARE * total:
        return TypicalSpacing(None, f"{total - len(known)} of {total} images record no spacing")
    median = np.median(known, axis=0)
    near = int(np.sum(np.all(np.abs(known / median - 1) <= TOLERANCE, axis=1)))
    if near < SHARE * total:
        low, high = known.min(axis=0), known.max(axis=0)
        spread = ", ".join(f"{a:.4g} to {b:.4g}" for a, b in zip(low, high, strict=True))
        return TypicalSpacing(
            None,
            f"spacings disagree ({spread} mm; {near} of {total} images within "
            f"{TOLERANCE:.0%} of the median)",
        )
    mm = tuple(float(v) for v in median)
    return TypicalSpacing(mm, f"median of {len(known)} images' spacings")
