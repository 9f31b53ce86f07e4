"""The RadSynth dataset format (docs/dataset-format.md): `dataset.json` + `manifest.csv` + images.

Everything that reads a dataset goes through `load_dataset`, which validates the whole layout
and raises `DatasetError` naming the file and the problem.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError
from .pixels import pixel_sha256, read_stored, to_unit_range
from .schema import CATEGORICAL, ConditionSchema
from .spacing import SPACING_COLUMN, TypicalSpacing, parse_spacing, typical_spacing

FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"
MANIFEST_CSV = "manifest.csv"
SPLITS = ("train", "val", "test")
BASE_COLUMNS = ("id", "file", "split", "patient_id", "sha256")
MASK_COLUMN = "mask_file"
ORIGIN_COLUMN = "origin"  # only in augmented datasets (dataset.json has_origin: true)
ORIGINS = ("real", "synthetic")
REQUIRED_KEYS = (
    "format_version",
    "name",
    "modality",
    "dimensionality",
    "image_size",
    "bit_depth",
    "intensity",
    "conditions",
    "has_masks",
    "counts",
    "ingest_report",
)


@dataclass
class Record:
    """One manifest row: an image, its split, pseudonymous patient and conditions."""

    id: str
    file: str
    split: str
    patient_id: str
    sha256: str
    conditions: dict[str, str | float | None] = field(default_factory=dict)
    mask_file: str | None = None
    origin: str | None = None
    spacing: tuple[float, ...] | None = None  # mm of the stored pixels, (row, column) in 2D


@dataclass
class Dataset:
    """A validated dataset on disk."""

    root: Path
    info: dict[str, Any]
    schema: ConditionSchema
    records: list[Record]

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def dimensionality(self) -> str:
        return self.info["dimensionality"]

    @property
    def image_size(self) -> list[int]:
        return list(self.info["image_size"])

    @property
    def has_masks(self) -> bool:
        return bool(self.info["has_masks"])

    @property
    def has_spacing(self) -> bool:
        return bool(self.info.get("has_spacing", False))

    def split(self, name: str) -> list[Record]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return [r for r in self.records if r.split == name]

    def typical_spacing(self, split: str = "train") -> TypicalSpacing:
        """The one pixel spacing (mm) that stands for the split's images, if there is one
        (`conditioning.dataset.spacing.typical_spacing`), and why (not)."""
        if not self.has_spacing:
            return TypicalSpacing(None, "the dataset records no pixel spacing")
        return typical_spacing([r.spacing for r in self.split(split)])

    def read_pixels(self, record: Record) -> np.ndarray:
        """The stored integer pixels of one record."""
        return read_stored(self.root / record.file)

    def load_image(self, record: Record) -> np.ndarray:
        """Float32 intensities in [0, 1], shape (H, W) or (D, H, W)."""
        return to_unit_range(self.read_pixels(record))

    def load_mask(self, record: Record) -> np.ndarray | None:
        if record.mask_file is None:
            return None
        return (read_stored(self.root / record.mask_file) > 0).astype(np.uint8)

    def verify_pixels(self) -> None:
        """Re-hash every stored image against the manifest (slow: reads every file)."""
        for record in self.records:
            pixels = self.read_pixels(record)
            if pixel_sha256(pixels) != record.sha256:
                raise DatasetError(
                    self.root / record.file,
                    f"pixels do not match sha256 of manifest row {record.id}",
                )
            expected = tuple(self.image_size)
            if pixels.shape != expected:
                raise DatasetError(
                    self.root / record.file,
                    f"shape {pixels.shape} differs from image_size {expected}",
                )

    def content_hash(self) -> str:
        """A hash of dataset.json and manifest.csv: identifies the dataset for lineage."""
        import hashlib

        digest = hashlib.sha256()
        for name in (DATASET_JSON, MANIFEST_CSV):
            digest.update((self.root / name).read_bytes())
        return digest.hexdigest()


def _fail(path: Path, problem: str) -> DatasetError:
    return DatasetError(path, problem)


def read_info(root: Path) -> dict[str, Any]:
    path = root / DATASET_JSON
    if not path.is_file():
        raise _fail(path, "missing: not a RadSynth dataset directory")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise _fail(path, "must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise _fail(path, f"missing key(s): {', '.join(missing)}")
    if info["format_version"] != FORMAT_VERSION:
        raise _fail(path, f"format_version {info['format_version']!r} is not {FORMAT_VERSION}")
    if info["dimensionality"] not in ("2D", "3D"):
        raise _fail(path, "dimensionality must be '2D' or '3D'")
    size = info["image_size"]
    ndim = 2 if info["dimensionality"] == "2D" else 3
    if not (
        isinstance(size, list)
        and len(size) == ndim
        and all(isinstance(s, int) and s > 0 for s in size)
    ):
        raise _fail(
            path, f"image_size must be {ndim} positive integers for {info['dimensionality']}"
        )
    if info["bit_depth"] not in (8, 16):
        raise _fail(path, "bit_depth must be 8 or 16")
    if not isinstance(info["intensity"], dict) or "method" not in info["intensity"]:
        raise _fail(path, "intensity must be an object with a 'method'")
    if not isinstance(info.get("has_spacing", False), bool):
        raise _fail(path, f"has_spacing must be true or false, not {info['has_spacing']!r}")
    return info


def _parse_row(
    row: dict[str, str],
    line: int,
    path: Path,
    schema: ConditionSchema,
    masks: bool,
    origins: bool = False,
    spacing_ndim: int | None = None,
) -> Record:
    """One manifest row; `spacing_ndim` is 2 or 3 when the manifest has a spacing column."""
    for column in BASE_COLUMNS:
        if not (row.get(column) or "").strip():
            raise _fail(path, f"line {line}: empty {column!r}")
    if row["split"] not in SPLITS:
        raise _fail(path, f"line {line}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
    file = row["file"]
    if Path(file).is_absolute() or ".." in Path(file).parts:
        raise _fail(path, f"line {line}: file {file!r} must be a relative path inside the dataset")
    conditions: dict[str, str | float | None] = {}
    for attribute in schema.attributes:
        try:
            conditions[attribute.name] = attribute.parse(row.get(attribute.name))
        except ValueError as exc:
            raise _fail(path, f"line {line}: {exc}") from None
    mask_file = (row.get(MASK_COLUMN) or "").strip() or None
    if masks and mask_file is None:
        raise _fail(path, f"line {line}: has_masks is true but mask_file is empty")
    origin = None
    if origins:
        origin = (row.get(ORIGIN_COLUMN) or "").strip()
        if origin not in ORIGINS:
            raise _fail(path, f"line {line}: origin {origin!r} is not one of {', '.join(ORIGINS)}")
    spacing = None
    if spacing_ndim is not None:
        try:
            spacing = parse_spacing(row.get(SPACING_COLUMN), spacing_ndim)
        except ValueError as exc:
            raise _fail(path, f"line {line}: {exc}") from None
    return Record(
        row["id"],
        file,
        row["split"],
        row["patient_id"],
        row["sha256"],
        conditions,
        mask_file,
        origin,
        spacing,
    )


def read_manifest(
    root: Path,
    schema: ConditionSchema,
    masks: bool,
    origins: bool = False,
    spacing_ndim: int | None = None,
) -> list[Record]:
    """The manifest's rows; `spacing_ndim` (2 or 3) when it has a `spacing_mm` column."""
    path = root / MANIFEST_CSV
    if not path.is_file():
        raise _fail(path, "missing")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        expected = manifest_columns(schema, masks, origins, spacing_ndim is not None)
        if list(header) != expected:
            raise _fail(path, f"header is {','.join(header)}; expected {','.join(expected)}")
        records = [
            _parse_row(row, i + 2, path, schema, masks, origins, spacing_ndim)
            for i, row in enumerate(reader)
        ]
    if not records:
        raise _fail(path, "holds no image")
    return records


def manifest_columns(
    schema: ConditionSchema, masks: bool, origins: bool = False, spacing: bool = False
) -> list[str]:
    extra = [
        *([MASK_COLUMN] if masks else []),
        *([ORIGIN_COLUMN] if origins else []),
        *([SPACING_COLUMN] if spacing else []),
    ]
    return [*BASE_COLUMNS, *schema.names, *extra]


def compute_counts(records: list[Record], schema: ConditionSchema) -> dict[str, Any]:
    """Counts per split and, for categorical attributes, per value within each split."""
    counts: dict[str, Any] = {}
    for split in SPLITS:
        rows = [r for r in records if r.split == split]
        entry: dict[str, Any] = {"images": len(rows), "patients": len({r.patient_id for r in rows})}
        if any(r.origin for r in records):
            entry[ORIGIN_COLUMN] = {o: sum(r.origin == o for r in rows) for o in ORIGINS}
        for attribute in schema.attributes:
            if attribute.kind == CATEGORICAL:
                tally = Counter(r.conditions.get(attribute.name) for r in rows)
                entry[attribute.name] = {v: tally.get(v, 0) for v in attribute.values}
                if tally.get(None):
                    entry[attribute.name]["unknown"] = tally[None]
        counts[split] = entry
    return counts


def check_records(
    root: Path, info: dict[str, Any], schema: ConditionSchema, records: list[Record]
) -> None:
    """Cross-row rules: unique ids and files, no patient in two splits, counts as declared."""
    manifest = root / MANIFEST_CSV
    for key, what in (("id", "id"), ("file", "file")):
        dupes = [v for v, n in Counter(getattr(r, key) for r in records).items() if n > 1]
        if dupes:
            raise _fail(manifest, f"{what} {dupes[0]!r} appears in more than one row")
    splits_of: dict[str, set[str]] = defaultdict(set)
    for record in records:
        splits_of[record.patient_id].add(record.split)
    leaking = sorted(p for p, s in splits_of.items() if len(s) > 1)
    if leaking:
        raise _fail(
            manifest,
            f"{len(leaking)} patient(s) appear in more than one split (first: {leaking[0]}): split leakage",
        )
    for record in records:
        for rel in filter(None, (record.file, record.mask_file)):
            if not (root / rel).is_file():
                raise _fail(root / rel, f"listed in manifest row {record.id} but missing")
    if compute_counts(records, schema) != info["counts"]:
        raise _fail(root / DATASET_JSON, "'counts' do not match manifest.csv")


def load_dataset(path: str | Path, verify_pixels: bool = False) -> Dataset:
    """Read and validate a dataset directory; `verify_pixels` also re-hashes every image."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(root, "dataset directory does not exist")
    info = read_info(root)
    schema = ConditionSchema.from_json(info["conditions"], str(root / DATASET_JSON))
    origins = bool(info.get("has_origin", False))
    spacing_ndim = len(info["image_size"]) if info.get("has_spacing", False) else None
    records = read_manifest(root, schema, bool(info["has_masks"]), origins, spacing_ndim)
    check_records(root, info, schema, records)
    dataset = Dataset(root, info, schema, records)
    if verify_pixels:
        dataset.verify_pixels()
    return dataset
