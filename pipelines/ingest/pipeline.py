"""`radsynth ingest`: any source -> the common steps -> one validated dataset directory.

Common steps on every image a reader yields: slice volumes (2D datasets), drop exact duplicates
(hash of the decoded source pixels), normalise intensities to [0, 1], resize, quantise; then
assign splits by patient, pseudonymise patients, and write through the atomic DatasetWriter.
Nothing that names a source file reaches the dataset or its log: skipped files are printed on
the console only.
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from conditioning.dataset import CATEGORICAL, DatasetError, DatasetWriter, pixel_sha256, quantize
from conditioning.dataset.format import Dataset
from conditioning.logfile import attach_log_file

from . import intensity as intensity_mod
from .attributes import build_schema
from .burned_in import looks_like_text, scrub
from .dedupe import DuplicateFilter, source_hash, stored_collisions
from .detect import KINDS, detect_kind
from .preview import PREVIEW, write_preview
from .pseudonym import check_key_outside, default_key_file, load_or_create_key, pseudonymise
from .resize import ASPECTS, RESAMPLE, resize_2d, resize_3d
from .source import IngestError, IngestOptions, IngestReport, SourceImage
from .splitting import SPLITS, assign_splits, check_fractions

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
    spacing: tuple[float, ...] | None = None
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
        self.items.append(
            Item(stored, small_mask, key, image.split, dict(image.conditions), None, image.modality)
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
        spacing = _spacing_3d(volume.shape, small.shape, image.spacing, o.aspect)
        self.items.append(
            Item(
                small, small_mask, key, image.split, dict(image.conditions), spacing, image.modality
            )
        )


def _spacing_3d(shape, new_shape, spacing, aspect) -> tuple[float, ...] | None:
    """Voxel spacing after resampling (for the NIfTI affine); None when the source gave none."""
    if spacing is None or len(spacing) != 3:
        return None
    sd, sy, sx = (float(s) for s in spacing)
    ph, pw = shape[1] * sy, shape[2] * sx
    size = new_shape[1]
    if aspect == "stretch":
        in_plane = (ph / size, pw / size)
    else:
        side = (max(ph, pw) if aspect == "pad" else min(ph, pw)) / size
        in_plane = (side, side)
    return (sd * shape[0] / new_shape[0], *in_plane)


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


def _stratum(item: Item, schema) -> str | None:
    for attribute in schema.attributes:
        if attribute.kind == CATEGORICAL:
            return str(item.conditions.get(attribute.name))
    return None


def _print_skips(report: IngestReport) -> None:
    """The operator's console (stderr) names skipped files; the dataset never does."""
    for name, reason in report.skipped_files[:MAX_LISTED_SKIPS]:
        print(f"radsynth ingest: skipped {name}: {reason}", file=sys.stderr)
    hidden = len(report.skipped_files) - MAX_LISTED_SKIPS
    if hidden > 0:
        print(f"radsynth ingest: ... and {hidden} more skipped file(s)", file=sys.stderr)


def _recorded_options(options: IngestOptions, kind: str) -> dict[str, Any]:
    """The options as dataset.json records them: no source path, no label-table path."""
    recorded = asdict(options)
    recorded["labels"] = None if options.labels is None else "given (path not recorded)"
    recorded["label_patterns"] = [list(p) for p in options.label_patterns]
    if kind not in ("dicom", "nifti") or options.dimensionality == "3D":
        recorded.pop("slice_axis")
    return recorded


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

    buffer = logging.handlers.MemoryHandler(10**6, flushLevel=logging.CRITICAL + 10)
    log.addHandler(buffer)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    file_handler = None
    started = time.monotonic()
    try:
        log.info(
            "ingest of a %s source started (%s %s, size %d)",
            kind,
            options.dimensionality,
            options.intensity,
            options.size,
        )
        collector = _Collector(options, report)
        stream = images if images is not None else read_source(kind, source, options, report)
        try:
            for image in tqdm(
                stream,
                desc="ingest",
                unit="img",
                disable=not progress,
                file=sys.stderr,
                mininterval=1.0,
            ):
                collector.add(image)
        finally:
            _print_skips(report)
        items = collector.items
        if not items:
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

        image_size = (
            [options.size, options.size]
            if options.dimensionality == "2D"
            else _finish_3d(items, options)
        )
        has_masks = any(item.mask is not None for item in items)
        if has_masks and not all(item.mask is not None for item in items):
            raise IngestError("some images come with a mask and others without")
        observed: dict[str, list[Any]] = {}
        for item in items:
            for name in item.conditions:
                observed.setdefault(name, [])
        for item in items:
            for name in observed:
                observed[name].append(item.conditions.get(name))
        schema = build_schema(observed, report.attributes, report.notes)

        patients: dict[str, tuple[str | None, str | None]] = {}
        for item in items:
            patients.setdefault(item.patient, (item.split, _stratum(item, schema)))
        split_of = assign_splits(
            patients, options.val_fraction, options.test_fraction, options.seed
        )
        empty = [s for s in SPLITS if s not in set(split_of.values())]
        if empty:
            report.notes.append(
                f"split(s) {', '.join(empty)} empty: {len(patients)} patient(s) to divide"
            )
        pseudonym = {p: pseudonymise(key, p) for p in patients}
        if len(set(pseudonym.values())) != len(pseudonym):
            raise IngestError("two patients received the same pseudonym; use another key")

        report.duplicates_removed = collector.duplicates.removed
        report.duplicate_groups = len(collector.duplicates.groups)
        report.duplicates_by_split = Counter(
            split_of[items[i].patient] for i in collector.kept_of_duplicate
        )
        report.extra["duplicates_removed_by_source_split"] = dict(
            sorted(collector.duplicates.removed_by_split.items())
        )
        label = next((a.name for a in schema.attributes if a.kind == CATEGORICAL), None)
        if label is not None:
            tally = Counter(str(c.get(label)) for c in collector.removed_conditions)
            report.extra["duplicates_removed_by_label"] = {label: dict(sorted(tally.items()))}
        report.extra["duplicates_with_differing_labels"] = collector.duplicates.label_conflicts
        report.extra["identical_after_resize"] = stored_collisions(
            [pixel_sha256(item.pixels) for item in items]
        )
        if collector.blank_slices:
            report.extra["blank_slices_dropped"] = collector.blank_slices
        report.extra["possible_burned_in_text"] = collector.text_like
        if collector.text_like:
            warning = (
                f"{collector.text_like} image(s) show text-like marks near their borders "
                "(possible burned-in patient data; OCR-free screen): inspect the dataset, or "
                "re-ingest with --scrub-burned-in x0,y0,x1,y1"
            )
            report.notes.append(warning)
            print(f"radsynth ingest: warning: {warning}", file=sys.stderr)
        report.extra["source"] = {"kind": kind, "options": _recorded_options(options, kind)}
        report.extra["patients"] = {
            "pseudonym": "HMAC-SHA256 of the source patient key, truncated to 64 bits",
            "key_id": hashlib.sha256(b"radsynth-pseudonym-key-id|" + key).hexdigest()[:12],
            "scope": "a patient key is scoped to the split the source prescribes",
        }
        report.extra["splits"] = {
            "by": "patient",
            "seed": options.seed,
            "source_splits": sorted({i.split for i in items if i.split}),
            "val_fraction": options.val_fraction,
            "test_fraction": options.test_fraction,
            "stratified_by": next(
                (a.name for a in schema.attributes if a.kind == CATEGORICAL), None
            ),
        }
        log.info(
            "%d exact duplicate(s) removed in %d group(s) (%s)",
            report.duplicates_removed,
            report.duplicate_groups,
            dict(report.duplicates_by_split) or "none",
        )

        modalities = Counter(i.modality for i in items if i.modality)
        modality = options.modality or (modalities.most_common(1)[0][0] if modalities else "OT")
        intensity = intensity_mod.describe(options.intensity)
        intensity.update(
            applied=dict(sorted(collector.methods.items())),
            resize=RESAMPLE,
            aspect=options.aspect,
            bit_depth=options.bit_depth,
        )
        if options.aspect == "pad":
            intensity["pad_value"] = 0.0
        if options.dimensionality == "2D" and kind in ("dicom", "nifti"):
            intensity["scope"] = "per volume (slices of one volume share a range)"

        with DatasetWriter(
            out,
            name=options.name or out.name,
            modality=modality,
            dimensionality=options.dimensionality,
            image_size=image_size,
            bit_depth=options.bit_depth,
            schema=schema,
            has_masks=has_masks,
            overwrite=overwrite,
        ) as writer:
            file_handler = attach_log_file(writer.stage / LOG_FILE, LOGGER)
            buffer.setTarget(file_handler)
            buffer.flush()
            log.removeHandler(buffer)
            ordered = [i for s in SPLITS for i in items if split_of[i.patient] == s]
            for item in tqdm(
                ordered,
                desc="write",
                unit="img",
                disable=not progress,
                file=sys.stderr,
                mininterval=1.0,
            ):
                affine = None if item.spacing is None else np.diag([*item.spacing, 1.0])
                writer.add(
                    item.pixels,
                    split=split_of[item.patient],
                    patient_id=pseudonym[item.patient],
                    conditions=item.conditions,
                    mask=item.mask,
                    affine=affine,
                )
            counts = {s: sum(1 for i in ordered if split_of[i.patient] == s) for s in SPLITS}
            log.info("images per split: %s; wall time %.1f s", counts, time.monotonic() - started)
            report.extra["wall_seconds"] = round(time.monotonic() - started, 1)
            dataset = writer.commit(intensity=intensity, ingest_report=report.to_json())
        legend = write_preview(dataset, dataset.root / PREVIEW)
        log.info("contact sheet %s, %s", PREVIEW, legend)
        return dataset
    finally:
        log.removeHandler(buffer)
        buffer.close()
        if file_handler is not None:
            log.removeHandler(file_handler)
            file_handler.close()
