"""`radsynth ingest`: any source -> the common steps -> one validated dataset directory.

Common steps on every image a reader yields: slice volumes (2D datasets), drop exact duplicates
(hash of the decoded source pixels), normalise intensities to [0, 1], resize, quantise; then
assign splits by patient, pseudonymise patients, and write through the atomic DatasetWriter.
Nothing that names a source file reaches the dataset or its log: skipped files are printed on
the console only.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from conditioning.dataset import DatasetError, DatasetSpec, DatasetWriter, quantize
from conditioning.dataset.format import Dataset
from conditioning.logfile import attach_log_file

from . import intensity as intensity_mod
from .burned_in import looks_like_text, scrub
from .dedupe import DuplicateFilter, source_hash
from .detect import KINDS, detect_kind
from .layout import Layout, plan_layout
from .preview import PREVIEW, write_preview
from .pseudonym import check_key_outside, default_key_file, load_or_create_key
from .resize import ASPECTS, resize_2d, resize_3d, resized_spacing
from .source import IngestError, IngestOptions, IngestReport, SourceImage
from .splitting import SPLITS, check_fractions

LOGGER = "radsynth.ingest"  # the only logger that reaches ingest.log (never names a file)
LOG_FILE = "ingest.log"
MAX_LISTED_SKIPS = 200
log = logging.getLogger(LOGGER)


@dataclass
class Item:
    """One image after the per-image steps, waiting for its split."""

    pixels: np.ndarray  # 2D: quantised; 3D: float [0, 1], depth resampled at the end
    mask: np.ndarray | None
    patient: str  # split-scoped source patient key (never stored)
    split: str | None  # split the source prescribes
    conditions: dict[str, Any]
    spacing: tuple[float, ...] | None = None  # mm of the stored pixels; None: the source gave none
    modality: str | None = None


def check_options(options: IngestOptions) -> None:
    """Reject impossible option values before any file is read."""
    if options.size < 4:
        raise ValueError(f"--size {options.size} is too small (at least 4)")
    if options.dimensionality not in ("2D", "3D"):
        raise ValueError("--dimensionality must be 2D or 3D")
    if options.slice_axis not in (0, 1, 2):
        raise ValueError("--slice-axis must be 0, 1 or 2")
    if options.depth is not None and options.depth < 1:
        raise ValueError("--depth must be a positive number of slices")
    if options.aspect not in ASPECTS:
        raise ValueError(f"--aspect must be one of {', '.join(ASPECTS)}")
    if options.intensity not in intensity_mod.METHODS:
        raise ValueError(f"--intensity must be one of {', '.join(intensity_mod.METHODS)}")
    if options.bit_depth not in (8, 16):
        raise ValueError("--bit-depth must be 8 or 16")
    check_fractions(options.val_fraction, options.test_fraction)


def read_source(
    kind: str, source: Path, options: IngestOptions, report: IngestReport
) -> Iterator[SourceImage]:
    """Dispatch to the reader of `kind` (imported only when needed)."""
    if kind == "folder":
        from .folder import read_folder as reader
    elif kind == "table":
        from .table import read_table as reader
    elif kind == "medmnist":
        from .medmnist import read_medmnist as reader
    elif kind == "dicom":
        try:
            from .dicom import read_dicom as reader
        except ImportError as exc:
            raise IngestError(f"the DICOM reader is unavailable ({exc})") from None
    elif kind == "nifti":
        try:
            from .nifti import read_nifti as reader
        except ImportError as exc:
            raise IngestError(f"the NIfTI reader is unavailable ({exc})") from None
    else:
        raise ValueError(f"unknown source kind {kind!r}; kinds: {', '.join(KINDS)}")
    return reader(source, options, report)


class _Collector:
    """Applies the per-image steps and keeps the small results."""

    def __init__(self, options: IngestOptions, report: IngestReport):
        self.options = options
        self.report = report
        self.items: list[Item] = []
        self.duplicates = DuplicateFilter()
        self.kept_of_duplicate: list[int] = []  # item index of the kept copy, per removed copy
        self.removed_conditions: list[dict] = []
        self.first_item: dict[str, int] = {}
        self.methods: Counter = Counter()
        self.blank_slices = 0
        self.text_like = 0  # images the burned-in text screen flagged (counted, never named)

    def _is_duplicate(self, pixels: np.ndarray, split: str | None, conditions: dict) -> bool:
        digest = source_hash(pixels)
        if self.duplicates.is_duplicate(digest, split, conditions):
            self.kept_of_duplicate.append(self.first_item[digest])
            self.removed_conditions.append(dict(conditions))
            return True
        self.first_item[digest] = len(self.items)
        return False

    def add(self, image: SourceImage) -> None:
        self.report.images_read += 1
        pixels = np.asarray(image.pixels, dtype=np.float32)
        if self.options.scrub_boxes:
            pixels = scrub(pixels, self.options.scrub_boxes)
        if pixels.ndim == 2 and looks_like_text(pixels):
            self.text_like += 1
        mask = None if image.mask is None else np.asarray(image.mask)
        if mask is not None and mask.shape != pixels.shape:
            raise IngestError(f"a mask of shape {mask.shape} pairs with an image {pixels.shape}")
        key = f"{image.split}/{image.patient_key}" if image.split else str(image.patient_key)
        if pixels.ndim == 2 and self.options.dimensionality == "2D":
            if not self._is_duplicate(pixels, image.split, image.conditions):
                low, high = self._range(pixels, image.window)
                self._add_2d(pixels, mask, low, high, key, image, image.spacing)
        elif pixels.ndim == 3 and self.options.dimensionality == "2D":
            self._add_slices(pixels, mask, key, image)
        elif pixels.ndim == 3:
            if not self._is_duplicate(pixels, image.split, image.conditions):
                self._add_3d(pixels, mask, key, image)
        elif pixels.ndim == 2:
            raise IngestError("the source yields 2D images; --dimensionality 3D needs volumes")
        else:
            raise IngestError(f"a reader yielded pixels of shape {pixels.shape}: need 2D or 3D")

    def _range(self, pixels: np.ndarray, window) -> tuple[float, float]:
        low, high, used = intensity_mod.intensity_range(pixels, self.options.intensity, window)
        self.methods[used] += 1
        return low, high

    def _add_2d(self, pixels, mask, low, high, key, image: SourceImage, spacing) -> None:
        o = self.options
        unit = intensity_mod.normalise(pixels, low, high)
        stored = quantize(resize_2d(unit, o.size, o.aspect, spacing), o.bit_depth)
        small_mask = None if mask is None else resize_2d(mask, o.size, o.aspect, spacing, True)
        stored_spacing = resized_spacing(pixels.shape, o.size, o.aspect, spacing)
        self.items.append(
            Item(
                stored,
                small_mask,
                key,
                image.split,
                dict(image.conditions),
                stored_spacing,
                image.modality,
            )
        )

    def _add_slices(self, volume, mask, key, image: SourceImage) -> None:
        """2D dataset from a volume: one image per slice along --slice-axis, same patient, the
        volume's intensity range (slices of one scan stay comparable), blank slices dropped."""
        axis = self.options.slice_axis
        low, high = self._range(volume, image.window)
        spacing = image.spacing
        if spacing is not None and len(spacing) == 3:
            spacing = tuple(s for i, s in enumerate(spacing) if i != axis)
        for index in range(volume.shape[axis]):
            plane = np.take(volume, index, axis=axis)
            if not np.nanmax(plane) > np.nanmin(plane):
                self.blank_slices += 1
                continue
            if self._is_duplicate(plane, image.split, image.conditions):
                continue
            plane_mask = None if mask is None else np.take(mask, index, axis=axis)
            self._add_2d(plane, plane_mask, low, high, key, image, spacing)

    def _add_3d(self, volume, mask, key, image: SourceImage) -> None:
        o = self.options
        low, high = self._range(volume, image.window)
        unit = intensity_mod.normalise(volume, low, high)
        small = resize_3d(unit, o.size, o.depth, o.aspect, image.spacing)
        small_mask = (
            None
            if mask is None
            else resize_3d(mask, o.size, o.depth, o.aspect, image.spacing, True)
        )
        spacing = resized_spacing(volume.shape, o.size, o.aspect, image.spacing, o.depth)
        self.items.append(
            Item(
                small, small_mask, key, image.split, dict(image.conditions), spacing, image.modality
            )
        )


def _finish_3d(items: list[Item], options: IngestOptions) -> list[int]:
    """Quantise volumes, resampling depth to --depth; without it all depths must agree."""
    depths = sorted({item.pixels.shape[0] for item in items})
    if options.depth is None and len(depths) > 1:
        raise IngestError(
            f"volumes have different depths ({', '.join(map(str, depths[:8]))}"
            f"{'...' if len(depths) > 8 else ''}): pass --depth D to resample them to D slices"
        )
    for item in items:
        item.pixels = quantize(item.pixels, options.bit_depth)
    return [depths[0], options.size, options.size]


def _print_skips(report: IngestReport) -> None:
    """The operator's console (stderr) names skipped files; the dataset never does."""
    for name, reason in report.skipped_files[:MAX_LISTED_SKIPS]:
        print(f"radsynth ingest: skipped {name}: {reason}", file=sys.stderr)
    hidden = len(report.skipped_files) - MAX_LISTED_SKIPS
    if hidden > 0:
        print(f"radsynth ingest: ... and {hidden} more skipped file(s)", file=sys.stderr)


def _check_places(source: Path, out: Path) -> None:
    source, out = source.resolve(), out.resolve()
    if out == source or source in out.parents:
        raise ValueError(f"{out}: the output dataset must not lie inside the source {source}")
    if out in source.parents:
        raise ValueError(f"{source}: the source must not lie inside the output dataset {out}")


def ingest(
    source: str | Path,
    out: str | Path,
    options: IngestOptions | None = None,
    *,
    kind: str | None = None,
    key_file: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    images: Iterable[SourceImage] | None = None,
) -> Dataset:
    """Build the dataset at `out` from `source` and return it, validated.

    `images` replaces the reader (tests, or callers that decode themselves); `kind` then only
    labels the report. Raises IngestError/ValueError/DatasetError naming the problem; on any
    error (or Ctrl-C) nothing is left at `out` beyond what was there before.
    """
    options = replace(options) if options else IngestOptions()  # readers may fill in fields
    source, out = Path(source), Path(out).resolve()
    check_options(options)
    if images is None and not source.exists():
        raise FileNotFoundError(f"{source}: source does not exist")
    _check_places(source, out)
    if out.exists() and not overwrite:
        raise DatasetError(out, "already exists; pass --overwrite to replace it")
    key_path = Path(key_file).expanduser() if key_file else default_key_file()
    check_key_outside(key_path, out)
    key = load_or_create_key(key_path)
    kind = kind or detect_kind(source, options.labels)
    report = IngestReport(strict=options.strict)
    with _IngestLog() as ingest_log:
        log.info(
            "ingest of a %s source started (%s %s, size %d)",
            kind, options.dimensionality, options.intensity, options.size,
        )  # fmt: skip
        stream = images if images is not None else read_source(kind, source, options, report)
        collector = _collect(stream, source, options, report, progress)
        image_size = (
            [options.size, options.size]
            if options.dimensionality == "2D"
            else _finish_3d(collector.items, options)
        )
        layout = plan_layout(collector, image_size, report, key, kind)
        target = _Target(out, options.name or out.name, options.bit_depth, overwrite, progress)
        dataset = _write(target, layout, options.dimensionality, report, ingest_log)
        legend = write_preview(dataset, dataset.root / PREVIEW)
        log.info("contact sheet %s, %s", PREVIEW, legend)
        return dataset


class _IngestLog:
    """Ingest's log lines, held in memory until the dataset's staging directory exists and then
    written to its ingest.log; both handlers leave the logger on the way out."""

    def __enter__(self) -> _IngestLog:
        self.buffer = logging.handlers.MemoryHandler(10**6, flushLevel=logging.CRITICAL + 10)
        self.file_handler: logging.Handler | None = None
        self.started = time.monotonic()
        log.addHandler(self.buffer)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        return self

    def to_file(self, path: Path) -> None:
        self.file_handler = attach_log_file(path, LOGGER)
        self.buffer.setTarget(self.file_handler)
        self.buffer.flush()
        log.removeHandler(self.buffer)

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def __exit__(self, *exc) -> None:
        log.removeHandler(self.buffer)
        self.buffer.close()
        if self.file_handler is not None:
            log.removeHandler(self.file_handler)
            self.file_handler.close()


def _collect(
    stream: Iterable[SourceImage],
    source: Path,
    options: IngestOptions,
    report: IngestReport,
    progress: bool,
) -> _Collector:
    """The per-image steps on every image the source yields; at least one must be usable."""
    collector = _Collector(options, report)
    try:
        for image in tqdm(
            stream, desc="ingest", unit="img", disable=not progress, file=sys.stderr,
            mininterval=1.0,
        ):  # fmt: skip
            collector.add(image)
    finally:
        _print_skips(report)
    if not collector.items:
        reasons = ", ".join(f"{n} {r}" for r, n in report.skipped.most_common()) or "none"
        raise IngestError(
            f"{source}: no usable image ({report.files_read} file(s) read; skipped: {reasons})"
        )
    log.info(
        "%d file(s) read, %d image(s) decoded, %d file(s) skipped",
        report.files_read,
        report.images_read,
        sum(report.skipped.values()),
    )
    for reason, n in report.skipped.most_common():
        log.info("skipped %d: %s", n, reason)
    return collector


@dataclass(frozen=True)
class _Target:
    """Where and how the dataset is written."""

    out: Path
    name: str
    bit_depth: int
    overwrite: bool
    progress: bool


def _write(
    target: _Target, layout: Layout, dimensionality: str, report: IngestReport, ingest_log
) -> Dataset:
    """Every image through the atomic DatasetWriter, in split order; the committed dataset."""
    spec = DatasetSpec(
        name=target.name,
        modality=layout.modality,
        dimensionality=dimensionality,
        image_size=layout.image_size,
        bit_depth=target.bit_depth,
        schema=layout.schema,
        has_masks=layout.has_masks,
    )
    with DatasetWriter(target.out, spec, overwrite=target.overwrite) as writer:
        ingest_log.to_file(writer.stage / LOG_FILE)
        ordered = layout.ordered()
        for item in tqdm(
            ordered, desc="write", unit="img", disable=not target.progress, file=sys.stderr,
            mininterval=1.0,
        ):  # fmt: skip
            volume = item.spacing is not None and len(item.spacing) == 3
            affine = np.diag([*item.spacing, 1.0]) if volume else None
            writer.add(
                item.pixels,
                split=layout.split_of[item.patient],
                patient_id=layout.pseudonym[item.patient],
                conditions=item.conditions,
                mask=item.mask,
                affine=affine,
                spacing=item.spacing,
            )
        counts = {s: sum(1 for i in ordered if layout.split_of[i.patient] == s) for s in SPLITS}
        spaced = sum(1 for i in ordered if i.spacing is not None)
        log.info("pixel spacing recorded for %d of %d image(s)", spaced, len(ordered))
        log.info("images per split: %s; wall time %.1f s", counts, ingest_log.seconds())
        report.extra["wall_seconds"] = round(ingest_log.seconds(), 1)
        return writer.commit(intensity=layout.intensity, ingest_report=report.to_json())
