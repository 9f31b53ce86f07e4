"""Reading a synthetic image set: what `radsynth generate` writes (images/ + manifest.csv) or a
plain folder of PNG files. Audit, evaluation, release and the app all read sets through here.

Layout of a generated set:
  images/<id>.png            8- or 16-bit greyscale
  masks/<id>.png             optional, paired by the manifest's `mask_file`
  manifest.csv               id, file, <condition columns...>, seed, sampler, steps, guidance,
                             model_hash[, mask_file]
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .pixels import read_png, to_unit_range

SET_MANIFEST = "manifest.csv"
GENERATION_COLUMNS = ("seed", "sampler", "steps", "guidance", "model_hash")


@dataclass
class SyntheticImage:
    id: str
    file: str
    conditions: dict[str, str] = field(default_factory=dict)
    generation: dict[str, str] = field(default_factory=dict)
    mask_file: str | None = None


@dataclass
class SyntheticSet:
    root: Path
    images: list[SyntheticImage]
    condition_names: list[str]
    has_manifest: bool

    def load_image(self, item: SyntheticImage) -> np.ndarray:
        """Float32 in [0, 1], (H, W)."""
        return to_unit_range(read_png(self.root / item.file))

    def load_all(self) -> np.ndarray:
        """All images as (N, H, W) float32; every image must have the same size."""
        arrays = [self.load_image(item) for item in self.images]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DatasetError(self.root, f"images differ in size: {sorted(shapes)}")
        return np.stack(arrays)

    def load_mask(self, item: SyntheticImage) -> np.ndarray | None:
        if item.mask_file is None:
            return None
        return (read_png(self.root / item.mask_file) > 0).astype(np.uint8)


def load_synthetic_set(path: str | Path) -> SyntheticSet:
    """Read a generated set (with manifest) or a plain PNG folder; errors name the file."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(root, "synthetic set directory does not exist")
    manifest = root / SET_MANIFEST
    if not manifest.is_file():
        files = sorted(p for p in root.rglob("*.png") if not p.name.startswith("."))
        if not files:
            raise DatasetError(root, "holds no PNG image and no manifest.csv: empty synthetic set")
        images = [
            SyntheticImage(
                p.relative_to(root).with_suffix("").as_posix(), p.relative_to(root).as_posix()
            )
            for p in files
        ]
        return SyntheticSet(root, images, [], False)
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        for column in ("id", "file"):
            if column not in header:
                raise DatasetError(manifest, f"missing column {column!r}")
        reserved = {"id", "file", "mask_file", "origin", *GENERATION_COLUMNS}
        condition_names = [c for c in header if c not in reserved]
        images = []
        for line, row in enumerate(reader, start=2):
            rel = row["file"] or ""
            if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise DatasetError(
                    manifest, f"line {line}: file {rel!r} must be a relative path inside the set"
                )
            if not (root / rel).is_file():
                raise DatasetError(root / rel, f"listed in {SET_MANIFEST} line {line} but missing")
            images.append(
                SyntheticImage(
                    row["id"],
                    rel,
                    {c: row[c] for c in condition_names},
                    {c: row[c] for c in GENERATION_COLUMNS if c in row},
                    (row.get("mask_file") or None),
                )
            )
    if not images:
        raise DatasetError(manifest, "lists no image: empty synthetic set")
    return SyntheticSet(root, images, condition_names, True)


def directory_sha256(path: str | Path) -> str:
    """Hash of a directory's content: sorted relative paths and the bytes of every file.
    Hidden files (names starting with '.') are ignored, so staging leftovers never count."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
