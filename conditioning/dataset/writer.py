"""Writing a dataset atomically: everything goes to a hidden sibling directory that is renamed
into place only once complete and validated, so an interrupted run leaves no half dataset."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import replace_directory, staging_dir, write_json_atomic
from .errors import DatasetError
from .format import (
    DATASET_JSON,
    FORMAT_VERSION,
    MANIFEST_CSV,
    Record,
    compute_counts,
    load_dataset,
    manifest_columns,
)
from .pixels import pixel_sha256, write_nifti, write_png
from .schema import ConditionSchema
from .spacing import check_spacing, format_spacing


@dataclass(frozen=True)
class DatasetSpec:
    """What dataset.json says of every image, fixed before the first is written: the name,
    modality, dimensionality (2D or 3D), image size, bit depth, condition schema, and whether
    each image has a mask and a recorded origin (real or synthetic)."""

    name: str
    modality: str
    dimensionality: str
    image_size: list[int]
    bit_depth: int
    schema: ConditionSchema
    has_masks: bool = False
    has_origin: bool = False


class DatasetWriter:
    """Collects images and rows in a staging directory; `commit` validates and renames it.

    Used as a context manager: leaving the block by an exception removes the staging directory
    and leaves any existing dataset at `out` untouched.
    """

    def __init__(self, out: str | Path, spec: DatasetSpec, *, overwrite: bool = False):
        self.out = Path(out).resolve()
        if self.out.exists() and not overwrite:
            raise DatasetError(self.out, "already exists; pass --overwrite to replace it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.stage = staging_dir(self.out)
        self.info: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": spec.name,
            "modality": spec.modality,
            "dimensionality": spec.dimensionality,
            "image_size": list(spec.image_size),
            "bit_depth": spec.bit_depth,
            "intensity": {},
            "conditions": spec.schema.to_json(),
            "has_masks": spec.has_masks,
            "has_origin": spec.has_origin,
            "has_spacing": False,  # set at commit: true when any image records a spacing
            "counts": {},
            "ingest_report": {},
        }
        self.schema = spec.schema
        self.records: list[Record] = []
        self._ext = ".png" if spec.dimensionality == "2D" else ".nii.gz"

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.stage.exists():
            shutil.rmtree(self.stage, ignore_errors=True)

    def _store(self, rel: str, pixels: np.ndarray, affine: np.ndarray | None) -> None:
        if self._ext == ".png":
            write_png(self.stage / rel, pixels)
        else:
            write_nifti(self.stage / rel, pixels, affine)

    def add(
        self,
        pixels: np.ndarray,
        *,
        split: str,
        patient_id: str,
        conditions: dict[str, Any],
        mask: np.ndarray | None = None,
        affine: np.ndarray | None = None,
        origin: str | None = None,
        spacing: tuple[float, ...] | None = None,
    ) -> Record:
        """Store one image (already resized and quantised) and its manifest row; `spacing` is
        the stored pixels' spacing in mm ((row, column) in 2D, (slice, row, column) in 3D), or
        None when the source gave none."""
        expected = tuple(self.info["image_size"])
        if pixels.shape != expected:
            raise ValueError(
                f"image shape {pixels.shape} differs from dataset image_size {expected}"
            )
        if spacing is not None:
            spacing = check_spacing(spacing, len(expected))
        index = len(self.records)
        image_id = f"img{index:06d}"
        rel = f"images/{split}/{image_id}{self._ext}"
        self._store(rel, pixels, affine)
        mask_rel = None
        if mask is not None:
            mask_rel = f"masks/{split}/{image_id}{self._ext}"
            self._store(mask_rel, (mask > 0).astype(np.uint8), affine)
        parsed = {a.name: a.parse(conditions.get(a.name)) for a in self.schema.attributes}
        if self.info["has_origin"] != (origin is not None):
            raise ValueError("origin must be given exactly when the dataset has_origin")
        record = Record(
            image_id,
            rel,
            split,
            patient_id,
            pixel_sha256(pixels),
            parsed,
            mask_rel,
            origin,
            spacing,
        )
        self.records.append(record)
        return record

    def copy(self, dataset, record: Record, origin: str | None = None) -> Record:
        """Store one record of another dataset unchanged: pixels, mask, voxel affine, spacing,
        conditions (ids are renumbered). `origin` defaults to the record's own."""
        return self.add(
            dataset.read_pixels(record),
            split=record.split,
            patient_id=record.patient_id,
            conditions=record.conditions,
            mask=dataset.load_mask(record),
            affine=_affine(dataset.root / record.file),
            origin=record.origin if origin is None else origin,
            spacing=record.spacing,
        )

    def _write_manifest(self) -> None:
        has_masks, has_origin = self.info["has_masks"], self.info["has_origin"]
        has_spacing = self.info["has_spacing"]
        with (self.stage / MANIFEST_CSV).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(manifest_columns(self.schema, has_masks, has_origin, has_spacing))
            for r in self.records:
                values = [
                    "" if r.conditions[n] is None else _fmt(r.conditions[n])
                    for n in self.schema.names
                ]
                writer.writerow(
                    [
                        r.id,
                        r.file,
                        r.split,
                        r.patient_id,
                        r.sha256,
                        *values,
                        *([r.mask_file] if has_masks else []),
                        *([r.origin] if has_origin else []),
                        *([format_spacing(r.spacing)] if has_spacing else []),
                    ]
                )

    def commit(
        self, *, intensity: dict[str, Any], ingest_report: dict[str, Any], extra: dict | None = None
    ):
        """Write dataset.json and manifest.csv, validate, then move into place."""
        if not self.records:
            raise DatasetError(self.out, "ingest yielded no image")
        self.info["intensity"] = intensity
        self.info["ingest_report"] = ingest_report
        self.info["counts"] = compute_counts(self.records, self.schema)
        self.info["has_spacing"] = any(r.spacing is not None for r in self.records)
        if extra:
            self.info.update(extra)
        self._write_manifest()
        write_json_atomic(self.stage / DATASET_JSON, self.info)
        load_dataset(self.stage)  # the same validation every reader applies
        replace_directory(self.stage, self.out)
        return load_dataset(self.out)


def _affine(path: Path) -> np.ndarray | None:
    """The voxel-to-world affine of a stored volume (2D PNGs have none)."""
    if not str(path).endswith(".nii.gz"):
        return None
    import nibabel as nib

    return np.asarray(nib.load(str(path)).affine)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
