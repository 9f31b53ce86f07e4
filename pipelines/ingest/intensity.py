"""Intensity normalisation to [0, 1] before quantisation: robust percentiles by default, the
plain range, or the window the source prescribes (DICOM VOI)."""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("percentile", "minmax", "window")
PERCENTILES = (0.5, 99.5)


def intensity_range(
    pixels: np.ndarray, method: str, window: tuple[float, float] | None = None
) -> tuple[float, float, str]:
    """The (low, high) mapped to 0 and 1, and the method actually used: "window" falls back to
    percentiles for an image without a window; a flat percentile range falls back to min/max."""
    if method not in METHODS:
        raise ValueError(f"intensity method {method!r} is not one of {', '.join(METHODS)}")
    if method == "window" and window is not None and window[1] > window[0]:
        return float(window[0]), float(window[1]), "window"
    values = pixels[np.isfinite(pixels)]
    if values.size == 0:
        return 0.0, 0.0, "minmax"
    if method == "minmax":
        return float(values.min()), float(values.max()), "minmax"
    low, high = np.percentile(values, PERCENTILES)
    if high > low:
        return float(low), float(high), "percentile"
    return float(values.min()), float(values.max()), "minmax"


def normalise(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] onto [0, 1], clipped; a flat image becomes all zeros."""
    pixels = np.nan_to_num(pixels.astype(np.float32), nan=low)
    if high <= low:
        return np.zeros_like(pixels, dtype=np.float32)
    return np.clip((pixels - low) / (high - low), 0.0, 1.0).astype(np.float32)


def describe(method: str) -> dict[str, Any]:
    """The dataset.json "intensity" entry for a method (resize details are added by the caller)."""
    out: dict[str, Any] = {"method": method, "range": [0.0, 1.0], "scope": "per image"}
    if method in ("percentile", "window"):
        out["percentiles"] = list(PERCENTILES)
    if method == "window":
        out["window"] = "the source's window (DICOM VOI) where given, else the percentiles"
    return out
