"""Leakage scan of everything a release would contain: file names, PNG text chunks and EXIF,
DICOM headers (PS3.15 Basic Profile attributes via `phi`), CSV manifests, JSON and any other
file's text, against identifying attributes and the strings that must never appear (patient
ids, training paths, source file names). A finding names the file and what was found without
echoing the identifying value itself."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

FAIL, WARN = "fail", "warning"
# Keys (CSV columns, JSON keys, PNG text keys) that identify a patient, whatever their value.
IDENTIFYING_KEY = re.compile(
    r"(^|[^a-z])(patient|birth|dob|accession|institution|physician|operator|referring|mrn|"
    r"medical_?record|ssn|social_?security|address|phone|email|source_?(path|file))",
    re.IGNORECASE,
)
TOKEN = re.compile(r"[\w.\-/\\]+")
ABSOLUTE_PATH = re.compile(
    r"(?<![\w:/])(/(?:home|work|root|mnt|data|Users|tmp|srv|media)/[\w.\-/]+|[A-Za-z]:\\[\w.\-\\]+)"
)
TEXT_SUFFIXES = {".csv", ".json", ".md", ".txt", ".yaml", ".yml", ".html", ".tsv", ".xml", ".log"}
MIN_TOKEN = 4


@dataclass
class Finding:
    file: str  # relative to the set
    kind: str  # what sort of leak: "dicom-attribute", "forbidden-string", ...
    detail: str  # what was found (never the identifying value itself)
    severity: str = FAIL

    def to_json(self) -> dict:
        return asdict(self)


class Forbidden:
    """Strings that must not occur in a release, with a label saying where each came from.

    Token-like strings (names, ids, paths) are matched as whole tokens of the text, so a
    patient id 'p0003' does not match inside 'p00031'; others by case-insensitive substring.
    Strings with an extension also forbid their stem ('x.jpeg' forbids 'x')."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.phrases: dict[str, str] = {}
        self.too_short = 0

    def add(self, value: str, label: str, stems: bool = True) -> None:
        value = value.strip()
        if len(value) < MIN_TOKEN or (value.isdigit() and len(value) < 6):
            self.too_short += 1
            return
        key = value.casefold()
        if TOKEN.fullmatch(value):
            self.tokens.setdefault(key, label)
            if not stems:
                return
            stem = Path(value.replace("\\", "/")).name
            while "." in stem and len(stem.rsplit(".", 1)[0]) >= 6:
                stem = stem.rsplit(".", 1)[0]
                self.tokens.setdefault(stem.casefold(), label)
        else:
            self.phrases.setdefault(key, label)

    def __len__(self) -> int:
        return len(self.tokens) + len(self.phrases)

    def search(self, text: str) -> list[str]:
        """Labels of the forbidden strings occurring in `text` (each once)."""
        hits: dict[str, None] = {}
        if self.tokens:
            for token in TOKEN.findall(text):
                token = token.strip(".-").casefold()
                parts = {token, *re.split(r"[/\\]", token)}
                for part in list(parts):
                    parts.add(part.rsplit(".", 1)[0])
                for part in parts:
                    if part in self.tokens:
                        hits[self.tokens[part]] = None
        if self.phrases:
            folded = text.casefold()
            for phrase, label in self.phrases.items():
                if phrase in folded:
                    hits[label] = None
        return list(hits)


def _redact(value: str) -> str:
    return value[:4] + "..." if len(value) > 6 else value[:2] + "..."


def _png_metadata(path: Path) -> list[tuple[str, str]]:
    from PIL import Image

    items: list[tuple[str, str]] = []
    with Image.open(path) as image:
        for key, value in getattr(image, "text", {}).items():
            items.append((f"PNG text chunk {key!r}", str(value)))
        for key, value in image.info.items():
            if key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp"):
                items.append(
                    (
                        f"PNG {key} block",
                        value.decode("latin-1", "replace")
                        if isinstance(value, bytes)
                        else str(value),
                    )
                )
        exif = image.getexif()
        for tag, value in exif.items():
            items.append((f"EXIF tag {tag}", str(value)))
    return items


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _scan_dicom(path: Path, rel: str, forbidden: Forbidden) -> list[Finding]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from . import phi

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=path.suffix.lower() != "")
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return [Finding(rel, "unreadable-dicom", f"cannot read as DICOM ({exc})")]
    findings = []
    for tag, keyword in phi.identifying_elements(ds, allow=phi.CONDITION_KEYWORDS):
        entry = phi.profile_attribute(tag)
        tag_text = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}"
        if entry is not None and entry.action == "U":
            findings.append(
                Finding(
                    rel,
                    "dicom-uid",
                    f"{tag_text} present: must be newly "
                    "generated, not carried over from a source image",
                    WARN,
                )
            )
        else:
            findings.append(
                Finding(
                    rel,
                    "dicom-attribute",
                    f"identifying attribute {tag_text} has a value ({phi.EDITION})",
                )
            )
    text = "\n".join(
        str(e.value)
        for e in ds.iterall()
        if e.VR in ("LO", "SH", "PN", "LT", "ST", "UT", "CS", "DS", "IS", "UI", "DA")
    )
    findings += [
        Finding(rel, "forbidden-string", f"DICOM header holds {label}")
        for label in forbidden.search(text)
    ]
    return findings


def _scan_csv(text: str, rel: str) -> list[Finding]:
    findings = []
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = reader.fieldnames or []
        rows = list(reader)
    except csv.Error:
        return findings
    for column in columns:
        if (
            column
            and IDENTIFYING_KEY.search(column)
            and any((r.get(column) or "").strip() for r in rows)
        ):
            findings.append(
                Finding(
                    rel,
                    "identifying-column",
                    f"column {column!r} names an identifying attribute and has values",
                )
            )
    return findings


def _json_keys(value, path: str = "") -> list[str]:
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if IDENTIFYING_KEY.search(str(key)) and item not in (None, "", [], {}):
                out.append(here)
            out += _json_keys(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value[:10000]):
            out += _json_keys(item, f"{path}[{i}]")
    return out


def scan_set(
    root: str | Path, forbidden: Forbidden, progress: bool = False, names: list[str] | None = None
) -> list[Finding]:
    """Every finding in the directory `root` (file names, metadata and content); `names` (the
    set's files, relative) limits the scan to what the release would carry."""
    from tqdm import tqdm

    root = Path(root)
    findings: list[Finding] = []
    if names is None:
        files = sorted(p for p in root.rglob("*") if p.is_file())
    else:
        files = [root / n for n in names]
    for path in tqdm(files, desc="metadata scan", disable=not progress):
        rel = path.relative_to(root).as_posix()
        findings += [
            Finding(rel, "file-name", f"file name holds {label}") for label in forbidden.search(rel)
        ]
        if path.suffix.lower() == ".png":
            findings += _scan_png(path, rel, forbidden)
        elif _is_dicom(path):
            findings += _scan_dicom(path, rel, forbidden)
        else:
            findings += _scan_content(path, rel, forbidden)
    return findings


def _scan_png(path: Path, rel: str, forbidden: Forbidden) -> list[Finding]:
    """PNG text chunks, EXIF and the like: forbidden strings fail, identifying-looking keys or
    values fail, any other metadata is a warning (a release's images should carry none)."""
    try:
        items = _png_metadata(path)
    except OSError as exc:
        return [Finding(rel, "unreadable-image", f"cannot read PNG ({exc})")]
    findings = []
    for where, value in items:
        labels = forbidden.search(value) + forbidden.search(where)
        if labels:
            findings += [Finding(rel, "forbidden-string", f"{where} holds {lb}") for lb in labels]
        elif IDENTIFYING_KEY.search(where) or IDENTIFYING_KEY.search(value[:200]):
            findings.append(Finding(rel, "image-metadata", f"{where} looks identifying"))
        else:
            findings.append(
                Finding(rel, "image-metadata", f"{where} present ({len(value)} characters)", WARN)
            )
    return findings


def _scan_content(path: Path, rel: str, forbidden: Forbidden) -> list[Finding]:
    """Any other file read as text: forbidden strings, identifying CSV columns and JSON keys,
    and (in text files) absolute paths that may name a source."""
    suffix = path.suffix.lower()
    data = path.read_bytes()
    text = (
        data.decode("utf-8") if suffix in TEXT_SUFFIXES and _utf8(data) else data.decode("latin-1")
    )
    findings = [
        Finding(rel, "forbidden-string", f"content holds {label}")
        for label in forbidden.search(text)
    ]
    if suffix == ".csv":
        findings += _scan_csv(text, rel)
    elif suffix == ".json":
        findings += _scan_json(text, rel)
    if suffix in TEXT_SUFFIXES:
        paths = sorted(set(ABSOLUTE_PATH.findall(text)))
        if paths:
            findings.append(
                Finding(
                    rel,
                    "absolute-path",
                    f"{len(paths)} absolute path(s), "
                    f"e.g. {_redact(paths[0])}: check none is a source path",
                    WARN,
                )
            )
    return findings


def _scan_json(text: str, rel: str) -> list[Finding]:
    try:
        keys = _json_keys(json.loads(text))
    except (json.JSONDecodeError, RecursionError):
        keys = []
    return [
        Finding(rel, "identifying-key", f"key {k!r} names an identifying attribute and has a value")
        for k in keys[:20]
    ]


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
