"""Images plus a CSV label table: one row per image, columns mapped to condition attributes.

Auto-detection covers common layouts (an `id` column naming the file, `boneage` in months,
`male` True/False, `sex`, `patient_id`, `split`); `--column ATTRIBUTE=COLUMN` says it
explicitly (`patient` and `split` are accepted as attribute names for those roles).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from .folder import list_files, read_or_skip
from .raster import is_raster
from .source import IngestOptions, IngestReport, SourceImage

ID_COLUMNS = ("id", "image_id", "image", "file", "filename", "file_name", "path", "name")
AUTO_COLUMNS = {  # column (lower case) -> attribute
    "boneage": "age_months",
    "bone_age": "age_months",
    "age_months": "age_months",
    "male": "sex",
    "sex": "sex",
    "gender": "sex",
    "patient_id": "patient",
    "patientid": "patient",
    "patient": "patient",
    "split": "split",
    "pathology": "pathology",
    "label": "label",
    "diagnosis": "pathology",
    "view": "view",
}
MAX_AGE_MONTHS = 1800  # 150 years: anything above is a unit or typing error, not an age
CSV_FIELD_LIMIT = 1 << 26  # 64 MiB: Python's default (128 KiB) stops at long free-text cells
TRUE, FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def find_label_table(source: Path) -> Path:
    """The label CSV: SOURCE itself when it is a CSV, else the single CSV at its top level."""
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise ValueError(f"{source}: a table source is a folder or a .csv file")
        return source
    tables = sorted(p for p in source.glob("*.csv") if not p.name.startswith("."))
    if len(tables) != 1:
        found = "none" if not tables else ", ".join(p.name for p in tables)
        raise ValueError(
            f"{source}: expected one label CSV at the top level (found {found}); "
            "name it with --labels"
        )
    return tables[0]


def _parse(attribute: str, column: str, raw: str):
    """A cell as a condition value; None for an empty cell; ValueError for a bad one."""
    text = raw.strip()
    if text == "":
        return None
    if attribute == "sex":
        lower = text.lower()
        if column.lower() == "male":
            if lower in TRUE:
                return "M"
            if lower in FALSE:
                return "F"
            raise ValueError(f"{column}={text!r} is not true/false")
        if lower in ("m", "male"):
            return "M"
        if lower in ("f", "female"):
            return "F"
        return text.upper()
    try:
        value = float(text)
    except ValueError:
        if attribute == "age_months":
            raise ValueError(f"{column}={text!r} is not a number of months") from None
        return text
    if not math.isfinite(value):
        raise ValueError(f"{column}={text!r} is not a finite number")
    if attribute == "age_months" and not 0 <= value <= MAX_AGE_MONTHS:
        raise ValueError(f"{column}={text!r} is outside 0..{MAX_AGE_MONTHS} months")
    return value


def resolve_columns(header: list[str], options: IngestOptions) -> tuple[str, dict[str, str]]:
    """(id column, attribute -> column) from the options and the header."""
    lower = {h.lower(): h for h in header}
    for column in [options.id_column, *options.columns.values()]:
        if column is not None and column not in header:
            raise ValueError(f"column {column!r} is not in the label table ({', '.join(header)})")
    id_column = options.id_column or next((lower[c] for c in ID_COLUMNS if c in lower), None)
    if id_column is None:
        raise ValueError(f"no image id column among {', '.join(header)}: pass --id-column")
    mapping = dict(options.columns)
    used = {id_column, *mapping.values()}
    for column in header:
        attribute = AUTO_COLUMNS.get(column.lower())
        if attribute and attribute not in mapping and column not in used:
            mapping[attribute] = column
            used.add(column)
    return id_column, mapping


def _read_rows(table: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a UTF-8 CSV; errors name the table, the line and the problem."""
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with table.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            try:
                return list(reader.fieldnames or []), list(reader)
            except csv.Error as exc:
                raise ValueError(
                    f"{table}: line {reader.line_num}: not readable CSV ({exc})"
                ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{table}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}; "
            "latin-1 or Windows-1252?): save the label table as UTF-8"
        ) from None
    finally:
        csv.field_size_limit(previous)


def read_table(source: Path, options: IngestOptions, report: IngestReport) -> Iterator[SourceImage]:
    """Yield the image of every table row, in table order, with its mapped conditions."""
    table = Path(options.labels) if options.labels else find_label_table(source)
    if not table.is_file():
        raise ValueError(f"{table}: label table not found")
    root = source if source.is_dir() else table.parent
    images = list_files(root, {table.resolve()})
    by_key: dict[str, list[Path]] = {}
    for path in images:
        for key in {path.relative_to(root).as_posix(), path.name, path.stem}:
            by_key.setdefault(key, []).append(path)
    header, rows = _read_rows(table)
    id_column, mapping = resolve_columns(header, options)
    report.extra["columns"] = {"id": id_column, **mapping}
    if "boneage" in {c.lower() for c in mapping.values()} and not options.modality:
        options.modality = "DX"  # the RSNA bone-age layout: hand radiographs
    attributes = {a: c for a, c in mapping.items() if a not in ("patient", "split")}
    used: set[Path] = set()
    own_patient = 0
    for line, row in enumerate(rows, start=2):
        where = f"{table}:{line}"
        image_id = (row.get(id_column) or "").strip()
        matches = by_key.get(image_id, [])
        if len(matches) != 1:
            reason = (
                "image named in the table is missing" if not matches else "ambiguous image name"
            )
            report.skip(f"{where} ({id_column}={image_id})", reason)
            continue
        path = matches[0]
        if path in used:
            report.skip(f"{where} ({id_column}={image_id})", "repeated table row for one image")
            continue
        used.add(path)
        report.files_read += 1
        conditions, bad = {}, None
        for attribute, column in attributes.items():
            try:
                conditions[attribute] = _parse(attribute, column, row.get(column) or "")
            except ValueError as exc:  # the value goes to the console only, not the report
                bad = (column, exc)
                break
        if bad is not None:
            report.skip(f"{path} ({where}: {bad[1]})", f"invalid value in column {bad[0]!r}")
            continue
        split = None
        if "split" in mapping:
            raw = (row.get(mapping["split"]) or "").strip().lower()
            split = SPLIT_NAMES.get(raw)
            if raw and split is None:
                report.skip(f"{path} ({where})", "unknown split name")
                continue
        pixels = read_or_skip(path, report, options.max_pixels)
        if pixels is None:
            continue
        patient = (row.get(mapping["patient"]) or "").strip() if "patient" in mapping else ""
        if not patient:
            patient, own_patient = f"image:{image_id}", own_patient + 1
        yield SourceImage(pixels, patient, conditions, split=split)
    for path in images:
        if path not in used:
            report.files_read += 1
            reason = "image not in the label table" if is_raster(path) else "unsupported file type"
            report.skip(path, reason)
    if own_patient:
        report.notes.append(f"{own_patient} image(s) without a patient id: each is its own patient")
