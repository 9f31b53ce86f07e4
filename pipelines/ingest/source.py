"""What every source reader yields: decoded images with their labels, before the common steps
(resize, intensity normalisation, duplicate removal, splitting, pseudonymisation, writing).

Source readers live one per module (`folder`, `table`, `dicom`, `nifti`, `medmnist`); each is a
generator `read_<kind>(source: Path, options: IngestOptions, report: IngestReport)` that yields
`SourceImage`s, counts every file it opens in `report.files_read` and records every file it could
not use with `report.skip(...)`. Readers never log file names (logs land inside the dataset).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .raster import DEFAULT_MAX_PIXELS


@dataclass
class IngestOptions:
    """Everything `radsynth ingest` was asked for; source readers read the fields they need."""

    size: int = 64
    dimensionality: str = "2D"  # "3D" keeps volumes; "2D" slices them along `slice_axis`
    slice_axis: int = 0  # axis of the (D, H, W) volume a reader yields that 2D slicing walks
    depth: int | None = None  # 3D only: resample depth to this many slices (None: keep)
    aspect: str = "pad"  # "pad" keeps the aspect ratio and pads, "crop" centre-crops, "stretch"
    intensity: str = "percentile"  # "minmax", "percentile" (0.5..99.5), or "window" (DICOM VOI)
    bit_depth: int = 8
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    strict: bool = False
    name: str | None = None
    modality: str | None = None
    # source-specific options (2D sources); readers ignore the ones that are not theirs
    preset: str = "auto"  # folder: "auto" detects a built-in layout (e.g. "kermany"), "none"
    label_attribute: str | None = None  # folder: attribute the folder/pattern labels fill
    label_patterns: list[tuple[str, str]] = field(default_factory=list)  # folder: (regex, value)
    patient_pattern: str | None = None  # folder: regex on file names; group 1 is the patient
    labels: Path | None = None  # table: the label CSV (default: the one CSV in the source)
    id_column: str | None = None  # table: column naming the image (file name or stem)
    columns: dict[str, str] = field(default_factory=dict)  # table: attribute -> column
    label_names: list[str] | None = None  # medmnist: names of the label indices
    max_pixels: int = DEFAULT_MAX_PIXELS  # raster files: larger images are skipped, named
    accept_burned_in: bool = False  # DICOM flagged for burned-in text: ingest instead of skip
    scrub_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # blanked first


@dataclass
class SourceImage:
    """One decoded image, not yet resized or normalised.

    `pixels` is float32, 2D (H, W) or 3D (D, H, W), in the source's own units (already passed
    through rescale slope/intercept, VOI LUT and MONOCHROME1 inversion where those apply).
    `patient_key` is the source's patient identifier: it is only ever stored as a keyed hash.
    `split` is the split the source prescribes (e.g. Kermany's train/test), or None.
    `window` is an intensity window (low, high) the source prescribes (DICOM VOI), or None.
    """

    pixels: np.ndarray
    patient_key: str
    conditions: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    mask: np.ndarray | None = None
    window: tuple[float, float] | None = None
    spacing: tuple[float, ...] | None = None
    modality: str | None = None


@dataclass
class IngestReport:
    """What the ingest saw; goes into dataset.json. Holds reasons and counts, never file names."""

    files_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    duplicates_removed: int = 0
    duplicate_groups: int = 0
    duplicates_by_split: Counter = field(default_factory=Counter)
    images_read: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # pipeline figures (resize collisions...)
    # condition attributes a reader declares (name -> conditioning.dataset.Attribute: vocabulary
    # order, unit, range); attributes not declared are inferred from the values seen
    attributes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    strict: bool = False
    # (name for the operator's console only, reason): printed, never written to the dataset
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, path: Path | str, reason: str) -> None:
        """Record a file that cannot be used; under --strict it stops the run instead."""
        if self.strict:
            raise IngestError(f"{path}: {reason}")
        self.skipped[reason] += 1
        self.skipped_files.append((str(path), reason))

    def to_json(self) -> dict[str, Any]:
        return {
            "files_read": self.files_read,
            "files_skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "duplicates_removed": self.duplicates_removed,
            "duplicate_groups": self.duplicate_groups,
            "duplicates_removed_by_split": dict(sorted(self.duplicates_by_split.items())),
            "images_read": self.images_read,
            **self.extra,
            "notes": list(self.notes),
        }


class IngestError(ValueError):
    """Ingest cannot go on (strict mode, no image, unusable source)."""
