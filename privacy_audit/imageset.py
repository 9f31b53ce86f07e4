"""The synthetic set under audit, read through `conditioning.dataset.load_synthetic_set` (the one
definition of a set's files, shared with the hash the gate compares and with the release), and
its filtered copy."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from conditioning.dataset import (
    DatasetError,
    SyntheticSet,
    load_synthetic_set,
    read_file_bytes,
    replace_directory,
    staging_dir,
)
from conditioning.dataset import set_sha256 as _set_sha256

from .errors import AuditError

MANIFEST = "manifest.csv"


def set_sha256(set_dir: str | Path) -> str:
    """The set's content hash, as recorded by the audit and compared by the release gate."""
    try:
        return _set_sha256(set_dir)
    except DatasetError as exc:
        raise AuditError(exc.path, exc.problem) from None


def open_set(set_dir: str | Path) -> SyntheticSet:
    """The set's images (generated set: exactly those its manifest lists; plain folder: every
    PNG); hidden files and symbolic links are refused."""
    try:
        return load_synthetic_set(set_dir)
    except DatasetError as exc:
        raise AuditError(exc.path, exc.problem) from None


def read_image01(path: Path) -> np.ndarray:
    """One PNG as float32 (H, W) in [0, 1]; colour is converted to grey (luma)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "L":
                return np.asarray(image, dtype=np.float32) / 255.0
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image).astype(np.float32)
                return np.clip(array / 65535.0, 0.0, 1.0)
            if image.mode in ("RGB", "RGBA", "LA", "P", "1"):
                return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
            raise AuditError(path, f"unsupported PNG mode {image.mode}")
    except FileNotFoundError:
        raise AuditError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, AuditError):
            raise
        raise AuditError(path, f"unreadable image ({exc})") from None


def load_images(
    synthetic: SyntheticSet, expected_shape: tuple[int, int], progress: bool = True
) -> np.ndarray:
    """All images of the set as (N, H, W) float32; a size that differs from the dataset's fails."""
    from tqdm import tqdm

    files = synthetic.image_files
    out = np.empty((len(files), *expected_shape), dtype=np.float32)
    for i, rel in enumerate(tqdm(files, desc="read set", disable=not progress)):
        image = read_image01(synthetic.root / rel)
        if image.shape != tuple(expected_shape):
            raise AuditError(
                synthetic.root / rel,
                f"image size {image.shape[1]}x{image.shape[0]} differs from the dataset's "
                f"{expected_shape[1]}x{expected_shape[0]}",
            )
        out[i] = image
    return out


def write_filtered_copy(synthetic: SyntheticSet, drop: set[str], out: str | Path) -> Path:
    """Copy the set without the images in `drop` (and their manifest rows), atomically."""
    out = Path(out).resolve()
    if out == synthetic.root.resolve() or synthetic.root.resolve() in out.parents:
        raise AuditError(out, "the filtered copy must not be inside the audited set")
    out.parent.mkdir(parents=True, exist_ok=True)
    drop = set(drop)
    for item in synthetic.images:  # a dropped image's other files (e.g. its mask_file) go too
        if item.file in drop:
            drop.update(v for v in item.row.values() if v in synthetic.files and v != MANIFEST)
    stage = staging_dir(out)
    try:
        for rel in synthetic.files:
            if rel in drop or rel == MANIFEST:
                continue
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read_file_bytes(synthetic.root / rel))
        if synthetic.has_manifest:
            with (stage / MANIFEST).open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=synthetic.manifest_columns)
                writer.writeheader()
                for item in synthetic.images:  # the manifest's own order
                    if item.file not in drop:
                        writer.writerow(item.row)
        if not any(stage.rglob("*.png")):
            raise AuditError(out, "every image was flagged: the filtered copy would be empty")
        replace_directory(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return out
