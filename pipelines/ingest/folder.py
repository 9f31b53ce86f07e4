"""A folder of ordinary image files: labels from folder names and/or file-name patterns, the
split from a `train`/`val`/`test` folder when there is one, the patient from a file-name pattern.

Built-in presets describe known public layouts (detected automatically, or named with
`--preset`); they are label rules, not paths: the Kermany chest X-ray layout
(`{train,test}/{NORMAL,PNEUMONIA}/personNNN_bacteria_NNN.jpeg`) becomes a 3-class `pathology`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conditioning.dataset import CATEGORICAL, Attribute

from .raster import RasterError, decode_raster, is_raster
from .source import IngestOptions, IngestReport, SourceImage

SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class LabelRules:
    """How a file's place and name become its label and patient."""

    attribute: str = "label"
    patterns: tuple[tuple[str, str], ...] = ()  # (regex searched in the file name, value)
    class_map: dict[str, str] = field(default_factory=dict)  # folder name (lower) -> value
    values: tuple[str, ...] = ()  # vocabulary order, when known
    patient_pattern: str | None = None  # group 1 (or the match) is the patient key
    modality: str | None = None


PRESETS = {
    "kermany": LabelRules(
        attribute="pathology",
        patterns=((r"bacteria", "bacterial"), (r"virus", "viral")),
        class_map={"normal": "normal"},
        values=("normal", "bacterial", "viral"),
        patient_pattern=r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)",
        modality="DX",
    ),
}


def _detect_kermany(classes: set[str], names: list[str]) -> bool:
    pneumonia = re.compile(r"^person\d+_(bacteria|virus)_", re.IGNORECASE)
    return classes == {"normal", "pneumonia"} and any(pneumonia.match(n) for n in names)


def read_or_skip(path: Path, report: IngestReport, max_pixels: int):
    """The file's grey pixels, or None after recording in the report why it was skipped."""
    if not is_raster(path):
        report.skip(path, f"unsupported file type ({path.suffix.lower() or 'no suffix'})")
        return None
    try:
        return decode_raster(path, max_pixels)
    except RasterError as exc:
        report.skip(path, exc.reason)
        return None


def list_files(source: Path, exclude: set[Path] | None = None) -> list[Path]:
    """Every regular file below `source`, sorted, without hidden files or folders."""
    exclude = exclude or set()
    files = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.resolve() not in exclude:
            files.append(path)
    return files


def place_of(rel: Path) -> tuple[str | None, str | None]:
    """(split, class folder) of a file from its folder names below the source."""
    folders = [p for p in rel.parts[:-1]]
    split = next((SPLIT_FOLDERS[p.lower()] for p in folders if p.lower() in SPLIT_FOLDERS), None)
    classes = [p for p in folders if p.lower() not in SPLIT_FOLDERS]
    return split, (classes[-1].lower() if classes else None)


def resolve_rules(source: Path, files: list[Path], options: IngestOptions) -> LabelRules:
    """The preset asked for or detected, overridden by explicit options."""
    if options.preset not in ("auto", "none", *PRESETS):
        raise ValueError(
            f"unknown preset {options.preset!r}; presets: auto, none, {', '.join(PRESETS)}"
        )
    rules = PRESETS.get(options.preset, LabelRules())
    if options.preset == "auto":
        classes = {c for f in files if (c := place_of(f.relative_to(source))[1])}
        if _detect_kermany(classes, [f.name for f in files]):
            rules = PRESETS["kermany"]
    for regex, _ in options.label_patterns:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(
                f"--label-pattern {regex!r}: not a regular expression ({exc})"
            ) from None
    if options.label_patterns:
        rules = LabelRules(
            attribute=rules.attribute,
            patterns=tuple(options.label_patterns),
            class_map=rules.class_map,
            patient_pattern=rules.patient_pattern,
            modality=rules.modality,
        )
    if options.label_attribute:
        rules = LabelRules(
            options.label_attribute,
            rules.patterns,
            rules.class_map,
            rules.values,
            rules.patient_pattern,
            rules.modality,
        )
    if options.patient_pattern:
        try:
            re.compile(options.patient_pattern)
        except re.error as exc:
            raise ValueError(f"--patient-pattern: not a regular expression ({exc})") from None
        rules = LabelRules(
            rules.attribute,
            rules.patterns,
            rules.class_map,
            rules.values,
            options.patient_pattern,
            rules.modality,
        )
    return rules


def label_of(name: str, folder_class: str | None, rules: LabelRules) -> str | None:
    for regex, value in rules.patterns:
        if re.search(regex, name):
            return value
    if folder_class is None:
        return None
    return rules.class_map.get(folder_class, folder_class)


def patient_of(name: str, rel: Path, rules: LabelRules) -> tuple[str, bool]:
    """(patient key, whether the name gave it); a file without one is its own patient."""
    if rules.patient_pattern:
        match = re.search(rules.patient_pattern, name)
        if match:
            return (match.group(1) if match.groups() else match.group(0)), True
    return rel.as_posix(), False


def read_folder(
    source: Path, options: IngestOptions, report: IngestReport, exclude: set[Path] | None = None
) -> Iterator[SourceImage]:
    """Yield every decodable image below `source` with its label, split and patient key."""
    if not source.is_dir():
        raise ValueError(f"{source}: a folder source must be a directory")
    files = list_files(source, exclude)
    rules = resolve_rules(source, files, options)
    preset = next((n for n, r in PRESETS.items() if r == rules), None)
    report.extra["label_rules"] = {
        "preset": preset,
        "attribute": rules.attribute,
        "patterns": [list(p) for p in rules.patterns],
        "from_folder_names": True,
        "patient_pattern": rules.patient_pattern,
    }
    if rules.values:
        report.attributes[rules.attribute] = Attribute(rules.attribute, CATEGORICAL, rules.values)
    if rules.modality and not options.modality:
        options.modality = rules.modality
    own_patient = 0
    for path in files:
        report.files_read += 1
        pixels = read_or_skip(path, report, options.max_pixels)
        if pixels is None:
            continue
        rel = path.relative_to(source)
        split, folder_class = place_of(rel)
        label = label_of(path.name, folder_class, rules)
        patient, named = patient_of(path.name, rel, rules)
        own_patient += not named
        conditions = {rules.attribute: label} if (rules.patterns or folder_class) else {}
        yield SourceImage(pixels, patient, conditions, split=split)
    if own_patient:
        report.notes.append(f"{own_patient} image(s) without a patient id: each is its own patient")
