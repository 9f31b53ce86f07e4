"""Where DICOM slices sit in space: ordering a series' slices along their normal, ordering the
frames of an enhanced multi-frame file, and the voxel spacing that goes with the result."""

from __future__ import annotations

import numpy as np

ORIENTATION_TOLERANCE = 1e-3
POSITION_TOLERANCE = 1e-3  # mm: two slices closer than this are "at the same place"


def floats(value, n: int) -> np.ndarray | None:
    """`value` as n floats, or None when absent or malformed."""
    if value is None:
        return None
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal of a slice from ImageOrientationPatient (row and column direction cosines)."""
    normal = np.cross(orientation[:3], orientation[3:])
    length = np.linalg.norm(normal)
    return normal / length if length > 0 else normal


def order_by_position(
    positions: list[np.ndarray | None], orientations: list[np.ndarray | None]
) -> tuple[list[int] | None, float | None, str | None]:
    """Indices of the slices sorted along the slice normal, the median gap between them, and,
    when they cannot be ordered that way, why not (None, None, reason)."""
    if any(p is None for p in positions) or any(o is None for o in orientations):
        return None, None, "missing ImagePositionPatient/ImageOrientationPatient"
    first = orientations[0]
    if any(np.max(np.abs(o - first)) > ORIENTATION_TOLERANCE for o in orientations):
        return None, None, "slices have different orientations (e.g. a localizer series)"
    normal = slice_normal(first)
    if not np.any(normal):
        return None, None, "ImageOrientationPatient is degenerate"
    depth = np.asarray([float(np.dot(p, normal)) for p in positions])
    order = [int(i) for i in np.argsort(depth, kind="stable")]
    gaps = np.diff(depth[order])
    if np.any(gaps < POSITION_TOLERANCE):
        repeats = int(np.sum(gaps < POSITION_TOLERANCE))
        return (
            None,
            None,
            f"{repeats} slice(s) share a position (multi-echo, time series or duplicates)",
        )
    return order, float(np.median(gaps)) if len(gaps) else None, None


def order_by_instance(numbers: list) -> list[int] | None:
    """Indices sorted by InstanceNumber, or None when numbers are missing or repeated."""
    try:
        values = [int(n) for n in numbers]
    except (TypeError, ValueError):
        return None
    if len(set(values)) != len(values):
        return None
    return [int(i) for i in np.argsort(values, kind="stable")]


def pixel_spacing(ds) -> tuple[float, float] | None:
    """In-plane (row, column) spacing: PixelSpacing, else ImagerPixelSpacing, else the enhanced
    shared Pixel Measures."""
    for source in (ds, _shared(ds, "PixelMeasuresSequence")):
        if source is None:
            continue
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            values = floats(source.get(keyword), 2)
            if values is not None and np.all(values > 0):
                return float(values[0]), float(values[1])
    return None


def slice_thickness(ds) -> float | None:
    """Nominal distance between slices when positions do not give it."""
    for source in (ds, _shared(ds, "PixelMeasuresSequence")):
        if source is None:
            continue
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            try:
                value = float(source.get(keyword))
            except (TypeError, ValueError):
                continue
            if np.isfinite(value) and value > 0:
                return value
    return None


def _shared(ds, sequence: str):
    groups = ds.get("SharedFunctionalGroupsSequence")
    if groups and sequence in groups[0] and groups[0][sequence]:
        return groups[0][sequence][0]
    return None


def frame_order(ds) -> tuple[list[int] | None, float | None]:
    """Order of an enhanced multi-frame file's frames along the slice normal, from its
    per-frame Plane Position, and the gap between them; (None, None) keeps the stored order."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return None, None
    shared_orientation = _shared(ds, "PlaneOrientationSequence")
    positions, orientations = [], []
    for item in per_frame:
        plane = item.get("PlanePositionSequence")
        positions.append(floats(plane[0].get("ImagePositionPatient"), 3) if plane else None)
        own = item.get("PlaneOrientationSequence")
        source = own[0] if own else shared_orientation
        orientations.append(
            floats(source.get("ImageOrientationPatient"), 6) if source is not None else None
        )
    order, gap, _ = order_by_position(positions, orientations)
    return order, gap
