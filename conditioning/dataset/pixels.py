"""Lossless storage of dataset pixels: PNG (8/16-bit) for 2D, NIfTI for 3D, and their hash.

The hash is over the decoded pixels, not the file bytes, so two encodings of the same image
are the same image (exact-duplicate detection and audit hashes rely on that).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .atomic import atomic_open, atomic_path
from .errors import DatasetError

STORED_DTYPES = {8: np.uint8, 16: np.uint16}


def pixel_sha256(pixels: np.ndarray) -> str:
    """SHA-256 of dtype, shape and C-order bytes of the stored (integer) pixels."""
    array = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def quantize(image01: np.ndarray, bit_depth: int) -> np.ndarray:
    """Map float intensities in [0, 1] onto the stored integer range."""
    dtype = STORED_DTYPES[bit_depth]
    top = np.iinfo(dtype).max
    return np.rint(np.clip(image01, 0.0, 1.0) * top).astype(dtype)


def to_unit_range(stored: np.ndarray) -> np.ndarray:
    """Stored integers back to float32 in [0, 1]."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / 255.0
    if stored.dtype == np.uint16:
        return stored.astype(np.float32) / 65535.0
    return stored.astype(np.float32)


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Write a 2D uint8/uint16 array as a greyscale PNG, atomically."""
    from PIL import Image

    path = Path(path)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"{path}: PNG needs a 2D uint8/uint16 array, got {pixels.dtype} {pixels.shape}"
        )
    with atomic_open(path, "wb") as handle:
        # Pillow picks "L" for uint8 and "I;16" for uint16 (its `mode=` argument is gone)
        Image.fromarray(np.ascontiguousarray(pixels)).save(handle, format="PNG")


def read_png(path: str | Path) -> np.ndarray:
    """Read a greyscale PNG as uint8/uint16; anything else is a DatasetError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "L":
                return np.asarray(image, dtype=np.uint8)
            if image.mode in ("I;16", "I;16B", "I"):
                array = np.asarray(image)
                if array.min() < 0 or array.max() > 65535:
                    raise DatasetError(path, "16-bit PNG holds values outside 0..65535")
                return array.astype(np.uint16)
            raise DatasetError(path, f"expected a greyscale PNG, found mode {image.mode}")
    except FileNotFoundError:
        raise DatasetError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(path, f"unreadable PNG ({exc})") from None


def write_nifti(path: str | Path, volume: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Write a 3D integer volume as .nii.gz, atomically."""
    import nibabel as nib

    path = Path(path)
    image = nib.Nifti1Image(np.ascontiguousarray(volume), np.eye(4) if affine is None else affine)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)


def read_nifti(path: str | Path) -> np.ndarray:
    """Read a stored NIfTI volume as its integer array."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "image file is missing")
    try:
        image = nib.load(path)
        return np.asarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for a damaged file
        raise DatasetError(path, f"unreadable NIfTI ({exc})") from None


def read_stored(path: str | Path) -> np.ndarray:
    """Read a stored image or mask of either kind by its suffix."""
    name = str(path)
    if name.endswith(".png"):
        return read_png(path)
    if name.endswith((".nii.gz", ".nii")):
        return read_nifti(path)
    raise DatasetError(path, "stored images must be .png (2D) or .nii.gz (3D)")
