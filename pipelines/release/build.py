"""`make_release`: the only way a synthetic set leaves the building.

The audit gate runs first; the release is staged in a hidden sibling directory and renamed
into place only when complete, so an interrupted release leaves the previous one intact and
no partial new one.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conditioning.dataset import (
    load_synthetic_set,
    replace_directory,
    snapshot_set,
    staging_dir,
)
from conditioning.dataset.atomic import publish_permissions
from conditioning.dataset.pixels import read_png, to_unit_range
from privacy_audit.gate import GateError, check_release
from privacy_audit.report import PUBLIC_HTML, REPORT_JSON, read_report

from .datasheet import render_datasheet
from .exports import (
    DicomSeries,
    scaled_spacing,
    write_datalist,
    write_nifti_export,
    write_secondary_capture,
)
from .lineage import build_lineage

log = logging.getLogger(__name__)
EXPORTS = ("datalist", "dicom", "nifti")  # PNG + manifest.csv are always written
DEFAULT_EXPORTS = ("datalist", "dicom")


@dataclass
class ReleaseInputs:
    set_dir: Path
    report_dir: Path
    name: str
    out_root: Path
    model_dir: Path | None = None
    dataset_dir: Path | None = None
    params_file: Path | None = None
    exports: tuple[str, ...] = DEFAULT_EXPORTS
    overwrite: bool = False
    screening_report_dir: Path | None = None
    evaluation_dir: Path | None = None  # `radsynth evaluate` output: fidelity, detectability
    utility_file: Path | None = None  # `radsynth bench utility` utility.json: how to use it


def _validate_name(name: str) -> None:
    if not name or name.startswith(".") or any(c in name for c in "/\\ \t") or name in ("..",):
        raise ValueError(f"release name {name!r}: use letters, digits, '-', '_' and '.'")


def make_release(inputs: ReleaseInputs) -> Path:
    """Gate, then write images, manifest, exports, audit report, datasheet and lineage."""
    _validate_name(inputs.name)
    unknown = sorted(set(inputs.exports) - set(EXPORTS))
    if unknown:
        raise ValueError(
            f"unknown export(s) {', '.join(unknown)}; choose from {', '.join(EXPORTS)}"
        )
    check_release(inputs.set_dir, inputs.report_dir)  # raises GateError with the reason
    report = read_report(inputs.report_dir)
    synthetic = load_synthetic_set(inputs.set_dir)
    if synthetic.incomplete:
        raise GateError(f"release refused: {inputs.set_dir}: {synthetic.incomplete}")
    # the bytes released are the bytes hashed here, compared with the audited hash once more
    content, digest = snapshot_set(inputs.set_dir)
    if digest != report.set_sha256:
        raise GateError(f"release refused: {inputs.set_dir} changed since it was audited")
    target = inputs.out_root / inputs.name
    stage = staging_dir(target)  # also puts back a release left aside by a killed overwrite
    if target.exists() and not inputs.overwrite:
        shutil.rmtree(stage)
        raise ValueError(
            f"{target}: release already exists; choose a new --name or pass --overwrite"
        )
    try:
        rows = _write_images(synthetic, content, stage, inputs)
        _write_audit(inputs.report_dir, stage / "audit")
        if inputs.screening_report_dir is not None:
            shutil.copyfile(
                inputs.screening_report_dir / REPORT_JSON, stage / "audit" / "screening-report.json"
            )
        _write_sample_grid(synthetic, stage, rows, stage / "sample_grid.png")
        metrics = _read_json(inputs.evaluation_dir, "metrics.json")
        if metrics is not None:  # fidelity and detectability travel with the set
            (stage / "evaluation").mkdir()
            (stage / "evaluation" / "metrics.json").write_text(
                json.dumps(metrics, indent=2) + "\n", encoding="utf-8"
            )
        lineage = build_lineage(inputs, synthetic_sha256=digest, report=report)
        (stage / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n", encoding="utf-8")
        datasheet = render_datasheet(
            inputs.name,
            rows,
            synthetic.condition_names,
            lineage,
            report,
            metrics=metrics,
            utility=_read_json(inputs.utility_file),
        )
        (stage / "datasheet.md").write_text(datasheet, encoding="utf-8")
        _verify_copies(synthetic, content, stage, rows)
        publish_permissions(stage)
        replace_directory(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def _read_json(path: Path | None, name: str | None = None) -> dict | None:
    """An optional JSON input of the datasheet; a named file that is missing or broken is an
    error naming it (a datasheet must not silently drop what it was asked to state)."""
    if path is None:
        return None
    path = path / name if name else path
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it for the datasheet ({exc})") from None


def _write_images(synthetic, content: dict, stage: Path, inputs: ReleaseInputs) -> list[dict]:
    """Images (and masks) from the hashed bytes, renamed images/<id>.png, with their exports."""
    from pydicom.uid import generate_uid

    (stage / "images").mkdir()
    rows: list[dict] = []
    has_masks = any(item.mask_file for item in synthetic.images)
    series = DicomSeries(study_uid=generate_uid(), series_uid=generate_uid())
    spacing = dicom_spacing(inputs) if "dicom" in inputs.exports else None
    model_hash = next((i.generation.get("model_hash", "") for i in synthetic.images), "")
    for index, item in enumerate(synthetic.images):
        rel = f"images/{item.id}.png"
        (stage / rel).write_bytes(content[item.file])
        row = {
            "id": item.id,
            "file": rel,
            **item.conditions,
            **item.generation,
            "origin": "synthetic",
        }
        if has_masks:
            mask_rel = f"masks/{item.id}.png" if item.mask_file else ""
            if mask_rel:
                (stage / "masks").mkdir(exist_ok=True)
                (stage / mask_rel).write_bytes(content[item.mask_file])
            row["mask_file"] = mask_rel
        pixels = read_png(stage / rel)
        if "dicom" in inputs.exports:
            (stage / "dicom").mkdir(exist_ok=True)
            write_secondary_capture(
                stage / "dicom" / f"{item.id}.dcm",
                pixels,
                conditions=item.conditions,
                model_hash=item.generation.get("model_hash", model_hash),
                series=series,
                instance_number=index + 1,
                pixel_spacing=None if spacing is None else scaled_spacing(*spacing, pixels.shape),
            )
        if "nifti" in inputs.exports:
            (stage / "nifti").mkdir(exist_ok=True)
            write_nifti_export(stage / "nifti" / f"{item.id}.nii.gz", pixels.T)
        rows.append(row)
    columns = list(rows[0].keys())
    with (stage / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    if "datalist" in inputs.exports:
        write_datalist(
            stage / "datalist.json", rows, synthetic.condition_names, _datalist_meta(inputs, rows)
        )
    return rows


def dicom_spacing(inputs: ReleaseInputs) -> tuple[tuple[float, ...], list[int]] | None:
    """The typical pixel spacing (mm) of the training images of the dataset the set's model was
    trained on (`--data`), and that dataset's image size (the export scales it to the set's).
    None, with the reason logged, without `--data`, when `--model`'s run records another training
    dataset than `--data`, or when the dataset has no one spacing (`Dataset.typical_spacing`)."""
    if inputs.dataset_dir is None:
        log.info("DICOM export without pixel spacing: no --data dataset to take it from")
        return None
    from conditioning.dataset import load_dataset

    dataset = load_dataset(inputs.dataset_dir)
    trained_on = _trained_on(inputs.model_dir)
    if trained_on is not None and trained_on != dataset.content_hash():
        log.warning(
            "DICOM export without pixel spacing: --model was trained on another dataset "
            "(hash %s...) than --data %r",
            trained_on[:12],
            dataset.name,
        )
        return None
    typical = dataset.typical_spacing("train")
    if typical.mm is None or dataset.dimensionality != "2D":
        why = typical.note if typical.mm is None else "the dataset is 3D"
        log.info("DICOM export without pixel spacing: %s", why)
        return None
    log.info(
        "DICOM export pixel spacing %s mm at %s pixels: %s of dataset %r's training split",
        " x ".join(f"{v:.4g}" for v in typical.mm),
        " x ".join(map(str, dataset.image_size)),
        typical.note,
        dataset.name,
    )
    return typical.mm, dataset.image_size


def _trained_on(model_dir: Path | None) -> str | None:
    """The content hash of the dataset a model run records it was trained on, if it records one
    (config.json, else model_card.json)."""
    if model_dir is None:
        return None
    for name in ("config.json", "model_card.json"):
        try:
            recorded = json.loads((model_dir / name).read_text(encoding="utf-8"))
            found = recorded.get("dataset", {}).get("hash")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, str) and found:
            return found
    return None


def _datalist_meta(inputs: ReleaseInputs, rows: list[dict]) -> dict:
    meta = {"name": inputs.name, "release": inputs.name, "tensorImageSize": "2D"}
    if inputs.dataset_dir is not None:
        from conditioning.dataset import CATEGORICAL, load_dataset

        dataset = load_dataset(inputs.dataset_dir)
        meta["modality"] = dataset.info["modality"]
        categorical = [a for a in dataset.schema.attributes if a.kind == CATEGORICAL]
        if categorical:
            meta["label_attribute"] = categorical[0].name
            meta["labels"] = {str(i): v for i, v in enumerate(categorical[0].values)}
    return meta


def _write_audit(report_dir: Path, target: Path) -> None:
    """The report's JSON and its image-free HTML. The auditor's report.html shows training
    images beside flagged ones: it never leaves the building."""
    target.mkdir()
    shutil.copyfile(report_dir / REPORT_JSON, target / REPORT_JSON)
    if (report_dir / PUBLIC_HTML).is_file():
        shutil.copyfile(report_dir / PUBLIC_HTML, target / PUBLIC_HTML)


def _verify_copies(synthetic, content: dict, stage: Path, rows: list[dict]) -> None:
    """Re-hash what was written: every released image and mask is byte for byte what the
    gate hashed."""
    for item, row in zip(synthetic.images, rows, strict=True):
        pairs = [(item.file, row["file"])]
        if item.mask_file:
            pairs.append((item.mask_file, row["mask_file"]))
        for source, written in pairs:
            if _sha256(content[source]) != _sha256((stage / written).read_bytes()):
                raise GateError(f"release refused: {written} differs from the audited {source}")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _write_sample_grid(synthetic, stage: Path, rows: list[dict], path: Path, per_row=8) -> None:
    """Up to `per_row` released images for each value of the first condition, one row each."""
    from generation.grids import save_grid

    name = synthetic.condition_names[0] if synthetic.condition_names else None
    groups: dict[str, list] = {}
    for row in rows:
        key = row.get(name, "") if name else "all"
        if len(groups.setdefault(key, [])) < per_row:
            groups[key].append(row["file"])
    keys = sorted(groups)
    grid = [np.stack([to_unit_range(read_png(stage / f)) for f in groups[k]]) for k in keys]
    save_grid(path, grid, labels=[k or "unconditioned" for k in keys])
