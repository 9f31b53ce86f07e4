"""DICOM source for `radsynth ingest`: a file or a folder (walked recursively) of DICOM files.

What it yields (`SourceImage`, float32, in modality units; see `dicom_pixels`):
- a single-frame file that is not part of a multi-slice series: one 2D image (H, W);
- a multi-frame file (NumberOfFrames > 1): one volume (D, H, W), frames ordered along the slice
  normal when the file has per-frame plane positions, else in stored order;
- a series (same SeriesInstanceUID, several single-frame slices) of a cross-sectional modality or
  with ImagePositionPatient: one volume (D, H, W), slices ordered by ImagePositionPatient
  projected on the slice normal (InstanceNumber where positions are missing). D runs along the
  acquisition's slice normal, rows and columns stay as stored: slicing axis 0 gives the native
  slices. Projection images (CR, DX, MG, ...) in one series without positions stay 2D images.

A series with several slice orientations (3-plane pilots, rotating MIPs) gives one stack per
orientation. Every file that gives no image (not DICOM, truncated, no pixel data, SR/RTSTRUCT/
SEG, localizer/scout images, no decoder for its transfer syntax, a series with mixed slice
shapes) is recorded with `report.skip` and a
reason that never holds the file name. `report.files_read` counts every DICOM candidate opened.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from .burned_in import burned_in_risk
from .dicom_geometry import (
    ORIENTATION_TOLERANCE,
    floats,
    frame_order,
    order_by_instance,
    order_by_position,
    pixel_spacing,
    slice_thickness,
)
from .dicom_pixels import UnusableDicom, check_decodable, decode
from .source import IngestError, IngestOptions, IngestReport, SourceImage

SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}
# Modalities whose single-frame files in one series are slices of a volume even without
# ImagePositionPatient (they are then ordered by InstanceNumber).
CROSS_SECTIONAL = {"CT", "MR", "PT", "NM", "ST"}
DAYS_PER_MONTH = 365.25 / 12
AGE_UNITS_IN_MONTHS = {"D": 1 / DAYS_PER_MONTH, "W": 7 / DAYS_PER_MONTH, "M": 1.0, "Y": 12.0}


def parse_age_months(value: Any) -> float | None:
    """DICOM AS ('003Y', '036M', '010W', '005D') in months; None when absent or malformed."""
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMYdwmy])\s*", str(value or ""))
    if not match:
        return None
    return round(int(match.group(1)) * AGE_UNITS_IN_MONTHS[match.group(2).upper()], 4)


def _parse_date(value: Any) -> date | None:
    text = str(value or "").strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def age_months(ds) -> float | None:
    """PatientAge, else the gap between PatientBirthDate and the study/series/acquisition date."""
    months = parse_age_months(ds.get("PatientAge"))
    if months is not None:
        return months
    born = _parse_date(ds.get("PatientBirthDate"))
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        seen = _parse_date(ds.get(keyword))
        if born is not None and seen is not None and seen >= born:
            return round((seen - born).days / DAYS_PER_MONTH, 4)
    return None


def conditions_of(ds) -> dict[str, Any]:
    """Conditions a DICOM header gives: age in months and sex (M/F; O or empty is unknown)."""
    conditions: dict[str, Any] = {}
    months = age_months(ds)
    if months is not None:
        conditions["age_months"] = float(months)
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex in ("M", "F"):
        conditions["sex"] = sex
    return conditions


def patient_key_of(ds, path: Path) -> str:
    """PatientID, else StudyInstanceUID, else SeriesInstanceUID (the core stores only a keyed
    hash of it); a file without any of them is its own patient."""
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return f"{keyword}:{value}"
    return "file:" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()


def _clean(text: str, path: Path) -> str:
    """A skip reason that holds neither the path nor the file name, on one short line."""
    for secret in (str(path), str(path.resolve()), path.name):
        text = text.replace(secret, "<file>")
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _exc_reason(prefix: str, exc: BaseException, path: Path) -> str:
    return _clean(f"{prefix} ({type(exc).__name__}: {exc})", path)


def _has_dicm_marker(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_files(source: Path) -> list[Path]:
    """The candidate files: `source` itself, or every non-hidden file under it that has a DICOM
    suffix or the 'DICM' marker (README, CSV and the like are passed over silently)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise IngestError(f"{source}: no such file or folder")
    found = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).parts
        if any(part.startswith(".") for part in rel) or not path.is_file():
            continue
        if path.suffix.lower() in SUFFIXES or _has_dicm_marker(path):
            found.append(path)
    return found


@dataclass
class _Header:
    """What grouping needs from one readable file with an image (pixels are read later)."""

    path: Path
    modality: str | None
    series: str | None
    frames: int
    shape: tuple[int, int]
    position: np.ndarray | None
    orientation: np.ndarray | None
    instance: Any
    patient_key: str
    conditions: dict[str, Any] = field(default_factory=dict)
    spacing: tuple[float, float] | None = None
    thickness: float | None = None


def _read_header(path: Path, report: IngestReport, options: IngestOptions) -> _Header | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    report.files_read += 1
    try:
        ds = pydicom.dcmread(path, force=False, defer_size="64 KB")
    except InvalidDicomError:
        report.skip(path, "not a DICOM file (no 'DICM' marker or file meta information)")
        return None
    except Exception as exc:  # pydicom raises many types for damaged files
        report.skip(path, _exc_reason("unreadable DICOM header", exc, path))
        return None
    try:
        check_decodable(ds)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        shape = (int(ds.Rows), int(ds.Columns))
    except UnusableDicom as exc:
        report.skip(path, _clean(str(exc), path))
        return None
    except Exception as exc:
        report.skip(path, _exc_reason("unusable DICOM image header", exc, path))
        return None
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        report.skip(path, "localizer (scout) image")
        return None
    risk = burned_in_risk(ds)
    if risk and not (options.accept_burned_in or options.scrub_boxes):
        report.skip(path, f"{risk}; --scrub-burned-in or --accept-burned-in to ingest it")
        return None
    if risk:
        report.extra["burned_in_accepted"] = report.extra.get("burned_in_accepted", 0) + 1
    modality = str(ds.get("Modality", "") or "").strip().upper() or None
    return _Header(
        path=path,
        modality=modality,
        series=str(ds.get("SeriesInstanceUID", "") or "").strip() or None,
        frames=frames,
        shape=shape,
        position=floats(ds.get("ImagePositionPatient"), 3),
        orientation=floats(ds.get("ImageOrientationPatient"), 6),
        instance=ds.get("InstanceNumber"),
        patient_key=patient_key_of(ds, path),
        conditions=conditions_of(ds),
        spacing=pixel_spacing(ds),
        thickness=slice_thickness(ds),
    )


def _is_slice(header: _Header) -> bool:
    """A single-frame file that may be one slice of a volume."""
    return header.frames == 1 and (
        header.position is not None or (header.modality or "") in CROSS_SECTIONAL
    )


def _same_orientation(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.max(np.abs(a - b)) <= ORIENTATION_TOLERANCE)


def _group(headers: list[_Header]) -> list[list[_Header]]:
    """Objects to yield, in file order: slices of one series and orientation together (a series
    holding several orientations, e.g. a 3-plane pilot or rotating MIPs, gives one stack per
    orientation), everything else alone."""
    stacks: dict[str, list[list[_Header]]] = defaultdict(list)
    objects: list[list[_Header]] = []
    for header in headers:
        if not (header.series and _is_slice(header)):
            objects.append([header])
            continue
        for stack in stacks[header.series]:
            if _same_orientation(stack[0].orientation, header.orientation):
                stack.append(header)
                break
        else:
            stack = [header]
            stacks[header.series].append(stack)
            objects.append(stack)
    return objects


def _skip_all(group: list[_Header], report: IngestReport, reason: str) -> None:
    for header in group:
        report.skip(header.path, reason)


def _order_series(group: list[_Header]) -> tuple[list[int] | None, float | None, str | None]:
    order, gap, why = order_by_position([h.position for h in group], [h.orientation for h in group])
    if order is not None or all(h.position is not None for h in group):
        return order, gap, why
    order = order_by_instance([h.instance for h in group])
    if order is None:
        return None, None, "cannot order slices: no ImagePositionPatient nor unique InstanceNumber"
    return order, None, None


def _orderable(group: list[_Header]) -> bool:
    """A series can be stacked when its slices have positions or unique InstanceNumbers."""
    if any(h.position is not None for h in group):
        return True
    return order_by_instance([h.instance for h in group]) is not None


def _read_pixels(header: _Header):
    import pydicom

    ds = pydicom.dcmread(header.path, force=False)
    return ds, decode(ds)


def _image(header: _Header, pixels: np.ndarray, spacing, window) -> SourceImage:
    return SourceImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        patient_key=header.patient_key,
        conditions=dict(header.conditions),
        window=window,
        spacing=spacing,
        modality=header.modality,
    )


def _single(header: _Header, report: IngestReport) -> SourceImage | None:
    """One file: a 2D image, or a volume for a multi-frame file."""
    try:
        ds, decoded = _read_pixels(header)
    except Exception as exc:
        report.skip(header.path, _exc_reason("pixel data cannot be decoded", exc, header.path))
        return None
    frames = decoded.frames
    if frames.shape[0] == 1:
        return _image(header, frames[0], header.spacing, decoded.window)
    order, gap = frame_order(ds)
    if order is not None and len(order) == frames.shape[0]:
        frames = frames[order]
    gap = gap or header.thickness
    spacing = (gap, *header.spacing) if gap and header.spacing else None
    return _image(header, frames, spacing, decoded.window)


def _series(group: list[_Header], report: IngestReport) -> SourceImage | None:
    """Several single-frame slices of one series: one volume ordered along the slice normal."""
    shapes = sorted({h.shape for h in group})
    if len(shapes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in shapes[:4])
        _skip_all(group, report, f"series has inconsistent slice shapes ({listed})")
        return None
    order, gap, why = _order_series(group)
    if order is None:
        _skip_all(group, report, f"series cannot be stacked: {why}")
        return None
    slices, window = [], None
    for i in order:
        header = group[i]
        try:
            _, decoded = _read_pixels(header)
        except Exception as exc:
            reason = _exc_reason("pixel data cannot be decoded", exc, header.path)
            report.skip(header.path, reason)
            rest = [h for h in group if h is not header]
            _skip_all(rest, report, "series incomplete: one of its slices cannot be decoded")
            return None
        slices.append(decoded.frames[0])
        window = window or decoded.window
    first = group[order[0]]
    gap = gap or first.thickness
    spacing = (gap, *first.spacing) if gap and first.spacing else None
    return _image(first, np.stack(slices), spacing, window)


def read_dicom(source: Path, options: IngestOptions, report: IngestReport) -> Iterator[SourceImage]:
    """Yield the images and volumes of a DICOM file or folder (see the module docstring).

    Headers are read first (to group series), pixels one object at a time as the caller asks.
    Of the options only the burned-in text rules apply here: 2D/3D, sizes and intensities are
    the core's business.
    """
    source = Path(source)
    headers = []
    for path in dicom_files(source):
        header = _read_header(path, report, options)
        if header is not None:
            headers.append(header)
    for group in _group(headers):
        if len(group) > 1 and not _orderable(group):
            # no positions and no usable InstanceNumber: files that are not slices of a volume
            for header in group:
                image = _single(header, report)
                if image is not None:
                    yield image
            continue
        if len(group) == 1:
            image = _single(group[0], report)
        else:
            image = _series(group, report)
        if image is not None:
            yield image
