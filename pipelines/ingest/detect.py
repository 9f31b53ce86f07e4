"""Which reader a source needs, when `--kind` is not given."""

from __future__ import annotations

from pathlib import Path

from .folder import list_files
from .raster import is_raster

KINDS = ("folder", "table", "dicom", "nifti", "medmnist")


def is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def detect_kind(source: Path, labels: Path | None = None) -> str:
    """medmnist for .npz, dicom for DICOM files, nifti for .nii(.gz), table for images with a
    label CSV beside them, else folder; in a folder the most common kind of file decides."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: source does not exist")
    if source.is_file():
        if source.suffix.lower() == ".npz":
            return "medmnist"
        if is_nifti(source):
            return "nifti"
        if source.suffix.lower() == ".csv":
            return "table"
        if is_dicom(source):
            return "dicom"
        raise ValueError(f"{source}: cannot tell the kind of this file; pass --kind")
    files = list_files(source)
    tally = {"medmnist": 0, "nifti": 0, "dicom": 0, "raster": 0}
    for path in files:
        if path.suffix.lower() == ".npz":
            tally["medmnist"] += 1
        elif is_nifti(path):
            tally["nifti"] += 1
        elif is_raster(path):
            tally["raster"] += 1
        elif is_dicom(path):
            tally["dicom"] += 1
    if not any(tally.values()):
        return "folder"  # nothing usable: the folder reader reports every file it skips
    best = max(tally, key=lambda k: (tally[k], k == "raster"))
    if best != "raster":
        return best
    has_table = labels is not None or any(
        p.suffix.lower() == ".csv" and p.parent == source for p in files
    )
    return "table" if has_table else "folder"
