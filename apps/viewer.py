"""What a radiograph viewer does to pixels before they reach the screen: window/level (the DICOM
linear VOI LUT) and enlargement by whole pixels (nearest neighbour, so no detail is invented).

Pure functions on 8-bit images, so a browser test can recompute exactly what the page shows.
"""

from __future__ import annotations

import io

import numpy as np

from conditioning.dataset import quantize

ZOOMS = (1, 2, 4)
INTERPOLATION = "nearest neighbour (each pixel drawn as a zoom x zoom block)"
FULL_WINDOW = (128.0, 256.0)  # centre, width: every grey level of an 8-bit image unchanged


def to_grey_levels(image01: np.ndarray) -> np.ndarray:
    """An (H, W) float image in [0, 1] (a volume: its middle slice) as 8-bit grey levels."""
    array = np.asarray(image01, dtype=np.float32)
    if array.ndim == 3:
        array = array[array.shape[0] // 2]
    return quantize(array, 8)


def window_level(grey: np.ndarray, centre: float, width: float) -> np.ndarray:
    """The DICOM linear VOI LUT (PS3.3 C.11.2.1.2.1) on 8-bit grey levels: values below
    centre - 0.5 - (width - 1) / 2 turn black, above centre - 0.5 + (width - 1) / 2 white, and
    the window in between is stretched over 0..255. centre 128, width 256 changes nothing."""
    if width < 1:
        raise ValueError(f"window width must be at least 1, got {width:g}")
    x = np.asarray(grey, dtype=np.float64)
    if width == 1:
        out = np.where(x > centre - 0.5, 255.0, 0.0)
    else:
        out = ((x - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def enlarge(grey: np.ndarray, zoom: int) -> np.ndarray:
    """Each pixel repeated as a zoom x zoom block."""
    if zoom not in ZOOMS:
        raise ValueError(f"zoom must be one of {', '.join(f'{z}x' for z in ZOOMS)}, got {zoom}")
    return np.repeat(np.repeat(grey, zoom, axis=0), zoom, axis=1)


def view_png(grey: np.ndarray, centre: float, width: float, zoom: int) -> bytes:
    """What the viewer shows of 8-bit grey levels (`to_grey_levels`): windowed, enlarged, as PNG
    bytes to be drawn at 1:1."""
    from PIL import Image

    shown = enlarge(window_level(grey, centre, width), zoom)
    buffer = io.BytesIO()
    Image.fromarray(shown, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
