"""Attributes that can identify a patient, per the DICOM Basic Application Level
Confidentiality Profile (PS3.15 Annex E, Table E.1-1, edition 2026c): the reference list the
ingest tests, the privacy audit's metadata scan and the DICOM export check against.

`identifying_elements(ds)` lists the profile's attributes that are present with a value in a
pydicom Dataset (file meta and nested sequences included), plus private elements, which the
profile removes as a whole. pydicom is only needed by callers that pass a Dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EDITION = "DICOM PS3.15 2026c, Table E.1-1"

# Profile action codes (PS3.15 E.1.1): D dummy value, Z zero length or dummy, X remove,
# K keep, C clean, U replace UID; "X/Z" etc. let the de-identifier choose.
ACTIONS = {
    "D": "replace with a non-zero length dummy value",
    "Z": "replace with a zero length value, or a dummy value",
    "X": "remove",
    "U": "replace with a non-zero length UID, consistent within the set",
}
# Conditions RadSynth keeps on purpose (quasi-identifiers the profile also lists): callers that
# write them deliberately pass these as `allow`.
CONDITION_KEYWORDS = ("PatientAge", "PatientSex")


@dataclass(frozen=True)
class ProfileAttribute:
    tag: int
    keyword: str
    action: str


@dataclass(frozen=True)
class RepeatingGroup:
    """Tags matched under a mask, e.g. 60xx,3000 Overlay Data: tag & mask == value."""

    value: int
    mask: int
    keyword: str
    action: str

    def matches(self, tag: int) -> bool:
        return tag & self.mask == self.value


REPEATING_GROUPS = (
    RepeatingGroup(0x50000000, 0xFF000000, "CurveData", "X"),  # 50xx,xxxx (retired curves)
    RepeatingGroup(0x60004000, 0xFF00FFFF, "OverlayComments", "X"),  # 60xx,4000
    RepeatingGroup(0x60003000, 0xFF00FFFF, "OverlayData", "X"),  # 60xx,3000
)

TABLE_FILE = Path(__file__).with_name("ps3_15_table_e1_1.tsv")


def _read_table(path: Path) -> tuple[tuple[int, str, str], ...]:
    """(tag, keyword, basic profile action) rows of the standard's table, kept as data: one row
    per line, `(gggg,eeee)<TAB>keyword<TAB>action`, `#` lines are comments."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            tag, keyword, action = line.split("\t")
            group, element = tag.strip("()").split(",")
            rows.append((int(group, 16) << 16 | int(element, 16), keyword, action))
        except ValueError:
            raise ValueError(f"{path}:{number}: expected (gggg,eeee), keyword, action") from None
        if not set(action) <= set(ACTIONS) | {"/", "*"}:  # U* = a UID, per sequence item
            raise ValueError(f"{path}:{number}: unknown profile action {action!r}")
    return tuple(rows)


_TABLE = _read_table(TABLE_FILE)
PROFILE: dict[int, ProfileAttribute] = {t: ProfileAttribute(t, k, a) for t, k, a in _TABLE}
KEYWORDS: dict[str, int] = {p.keyword: p.tag for p in PROFILE.values()}


def profile_attribute(tag: int) -> ProfileAttribute | RepeatingGroup | None:
    """The profile entry that covers `tag` (a 32-bit int or pydicom BaseTag), or None."""
    tag = int(tag)
    if tag in PROFILE:
        return PROFILE[tag]
    for group in REPEATING_GROUPS:
        if group.matches(tag):
            return group
    return None


def is_identifying(tag: int) -> bool:
    """True for a tag the profile lists, and for private tags (odd group), which it removes."""
    tag = int(tag)
    return profile_attribute(tag) is not None or _is_private(tag)


def _is_private(tag: int) -> bool:
    group = tag >> 16
    return bool(group & 1) and group > 0x0008


def _has_value(element) -> bool:
    value = element.value
    if element.VR == "SQ":
        return len(value) > 0
    if value is None:
        return False
    if isinstance(value, str | bytes | bytearray | list | tuple):
        return len(value) > 0 and any(str(v).strip("\x00 ") for v in _as_list(value))
    return str(value).strip() != ""


def _as_list(value) -> list:
    if isinstance(value, bytes | bytearray):
        return [value.decode("latin-1")]
    if isinstance(value, str):
        return [value]
    return list(value)


def _walk(dataset) -> Iterable:
    for element in dataset:
        yield element
        if element.VR == "SQ" and element.value:
            for item in element.value:
                yield from _walk(item)


def identifying_elements(
    dataset, *, allow: Iterable[str] = (), include_private: bool = True
) -> list[tuple[int, str]]:
    """(tag, keyword) of every profile attribute present with a value in `dataset` (its file
    meta and every nested sequence item included), plus private elements ("private" keyword)
    unless `include_private` is False. Keywords in `allow` are not reported.

    An empty value does not count: the profile's Z action leaves attributes present but empty.
    """
    allowed = set(allow)
    found: list[tuple[int, str]] = []
    sources = []
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        sources.append(meta)
    sources.append(dataset)
    for source in sources:
        for element in _walk(source):
            tag = int(element.tag)
            entry = profile_attribute(tag)
            if entry is not None:
                keyword = entry.keyword
            elif include_private and _is_private(tag):
                keyword = "private"
            else:
                continue
            if keyword in allowed or not _has_value(element):
                continue
            found.append((tag, keyword))
    return found


def describe(found: list[tuple[int, str]]) -> str:
    """A short human list, e.g. '(0010,0010) PatientName, (0010,0020) PatientID'."""
    return ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X}) {k}" for t, k in found)
