"""The plan step of ingest: from the collected images to what the dataset will hold (schema,
split and pseudonym per patient, modality, intensity record) and what its report says about
duplicates, burned-in text and the source, before anything is written."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from conditioning.dataset import CATEGORICAL, ConditionSchema, pixel_sha256

from . import intensity as intensity_mod
from .attributes import build_schema
from .dedupe import stored_collisions
from .pseudonym import pseudonymise
from .resize import RESAMPLE
from .source import IngestError, IngestOptions, IngestReport
from .splitting import SPLITS, assign_splits

if TYPE_CHECKING:
    from .pipeline import Item, _Collector

log = logging.getLogger("radsynth.ingest")


@dataclass(frozen=True)
class Layout:
    """What the dataset will hold: its images and, per source patient, split and pseudonym."""

    items: list[Item]
    image_size: list[int]
    has_masks: bool
    schema: ConditionSchema
    split_of: dict[str, str]
    pseudonym: dict[str, str]
    modality: str
    intensity: dict[str, Any]

    def ordered(self) -> list[Item]:
        """The images in write order: train, val, test."""
        return [i for s in SPLITS for i in self.items if self.split_of[i.patient] == s]


def plan_layout(
    collector: _Collector,
    image_size: list[int],
    report: IngestReport,
    key: bytes,
    kind: str,
) -> Layout:
    """Schema, splits, pseudonyms, modality and intensity record of the collected images; the
    report gains what it says about them."""
    options, items = collector.options, collector.items
    has_masks = any(item.mask is not None for item in items)
    if has_masks and not all(item.mask is not None for item in items):
        raise IngestError("some images come with a mask and others without")
    schema = _schema(items, report)
    split_of = _splits(items, schema, options, report)
    pseudonym = {p: pseudonymise(key, p) for p in dict.fromkeys(i.patient for i in items)}
    if len(set(pseudonym.values())) != len(pseudonym):
        raise IngestError("two patients received the same pseudonym; use another key")
    _record_duplicates(report, collector, split_of, schema)
    _record_provenance(report, collector, schema, key, kind)
    modalities = Counter(i.modality for i in items if i.modality)
    modality = options.modality or (modalities.most_common(1)[0][0] if modalities else "OT")
    intensity = _intensity(collector, kind)
    return Layout(items, image_size, has_masks, schema, split_of, pseudonym, modality, intensity)


def _schema(items: list[Item], report: IngestReport) -> ConditionSchema:
    observed: dict[str, list[Any]] = {}
    for item in items:
        for name in item.conditions:
            observed.setdefault(name, [])
    for item in items:
        for name in observed:
            observed[name].append(item.conditions.get(name))
    return build_schema(observed, report.attributes, report.notes)


def _splits(items, schema, options: IngestOptions, report: IngestReport) -> dict[str, str]:
    """The split of each source patient (the source's, else drawn stratified by label)."""
    patients: dict[str, tuple[str | None, str | None]] = {}
    for item in items:
        patients.setdefault(item.patient, (item.split, _stratum(item, schema)))
    split_of = assign_splits(patients, options.val_fraction, options.test_fraction, options.seed)
    empty = [s for s in SPLITS if s not in set(split_of.values())]
    if empty:
        report.notes.append(
            f"split(s) {', '.join(empty)} empty: {len(patients)} patient(s) to divide"
        )
    return split_of


def _record_duplicates(report: IngestReport, collector: _Collector, split_of, schema) -> None:
    items = collector.items
    report.duplicates_removed = collector.duplicates.removed
    report.duplicate_groups = len(collector.duplicates.groups)
    report.duplicates_by_split = Counter(
        split_of[items[i].patient] for i in collector.kept_of_duplicate
    )
    report.extra["duplicates_removed_by_source_split"] = dict(
        sorted(collector.duplicates.removed_by_split.items())
    )
    label = _label(schema)
    if label is not None:
        tally = Counter(str(c.get(label)) for c in collector.removed_conditions)
        report.extra["duplicates_removed_by_label"] = {label: dict(sorted(tally.items()))}
    report.extra["duplicates_with_differing_labels"] = collector.duplicates.label_conflicts
    report.extra["identical_after_resize"] = stored_collisions(
        [pixel_sha256(item.pixels) for item in items]
    )
    if collector.blank_slices:
        report.extra["blank_slices_dropped"] = collector.blank_slices


def _record_provenance(report: IngestReport, collector: _Collector, schema, key, kind) -> None:
    """The burned-in text screen's count, the source options, how patients were pseudonymised
    and how splits were drawn."""
    options, items = collector.options, collector.items
    report.extra["possible_burned_in_text"] = collector.text_like
    if collector.text_like:
        warning = (
            f"{collector.text_like} image(s) show text-like marks near their borders "
            "(possible burned-in patient data; OCR-free screen): inspect the dataset, or "
            "re-ingest with --scrub-burned-in x0,y0,x1,y1"
        )
        report.notes.append(warning)
        print(f"radsynth ingest: warning: {warning}", file=sys.stderr)
    report.extra["source"] = {"kind": kind, "options": recorded_options(options, kind)}
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
        "stratified_by": _label(schema),
    }
    log.info(
        "%d exact duplicate(s) removed in %d group(s) (%s)",
        report.duplicates_removed,
        report.duplicate_groups,
        dict(report.duplicates_by_split) or "none",
    )


def _intensity(collector: _Collector, kind: str) -> dict[str, Any]:
    """How intensities were mapped, as dataset.json records it."""
    options = collector.options
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
    return intensity


def _label(schema: ConditionSchema) -> str | None:
    """The first categorical attribute: what splits are stratified and duplicates tallied by."""
    return next((a.name for a in schema.attributes if a.kind == CATEGORICAL), None)


def _stratum(item: Item, schema) -> str | None:
    for attribute in schema.attributes:
        if attribute.kind == CATEGORICAL:
            return str(item.conditions.get(attribute.name))
    return None


def recorded_options(options: IngestOptions, kind: str) -> dict[str, Any]:
    """The options as dataset.json records them: no source path, no label-table path."""
    recorded = asdict(options)
    recorded["labels"] = None if options.labels is None else "given (path not recorded)"
    recorded["label_patterns"] = [list(p) for p in options.label_patterns]
    if kind not in ("dicom", "nifti") or options.dimensionality == "3D":
        recorded.pop("slice_axis")
    return recorded
