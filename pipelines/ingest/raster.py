"""Decoding ordinary raster files (PNG, JPEG, TIFF, BMP...) to float32 grey pixels."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 80_000_000  # about 9000 x 9000: above any radiograph, below PIL's bomb alarm
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's "L"


class RasterError(ValueError):
    """A file that cannot be used; `reason` is the short text the ingest report counts."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason} ({detail})" if detail else reason)


def is_raster(path: Path) -> bool:
    return path.suffix.lower() in RASTER_SUFFIXES


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """Colour to grey: an exact copy when the channels are equal (grey saved as RGB), else luma."""
    rgb = rgb[..., :3].astype(np.float32)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].copy()
    return rgb @ LUMA


def decode_raster(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Grey float32 (H, W) in the file's own value range; raises RasterError with a reason.
    An image of more than `max_pixels` pixels is refused from its header, before decoding."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise RasterError("empty file")
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if getattr(image, "n_frames", 1) > 1:
                    raise RasterError("multi-frame image (not supported in 2D sources)")
                image.load()
                mode = image.mode
                if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    return np.asarray(image).astype(np.float32)
                if mode == "L":
                    return np.asarray(image, dtype=np.uint8).astype(np.float32)
                if mode in ("1", "LA"):
                    return np.asarray(image.convert("L"), dtype=np.uint8).astype(np.float32)
                return to_grey(np.asarray(image.convert("RGB")))
    except RasterError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        size = re.search(r"\((\d+) pixels\)", str(exc))
        raise RasterError(
            "image too large",
            f"{size.group(1) if size else 'over'} pixels; the limit is {max_pixels} (--max-pixels)",
        ) from None
    except UnidentifiedImageError:
        raise RasterError("not a decodable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise RasterError("corrupt or truncated image", str(exc)) from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
