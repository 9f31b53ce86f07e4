"""report.json, the audit's record, as types: the only module that writes or reads the file.

`AuditReport` and its sections are frozen dataclasses whose fields are the file's keys, in the
file's order. `write_report` writes one atomically; `read_report` reads one back and checks it on
the way in: a missing file, bad JSON, a missing field, a value of the wrong type or a
schema_version this code does not read raises ReportError naming the file and the field
(`summary.copy_detection.flagged`, `samples[3].nearest[0].id`). Keys the types do not name are
ignored, except in the open-ended parts kept whole (`encoder` training statistics, an attack's or
DCR's further measures, `thresholds.copy.standardiser`, `summary.model_membership.model`).

Version rule: SCHEMA_VERSION is the layout this code writes. A change that renames, removes or
retypes a key, or adds a required one, raises it, and `read_report` keeps reading every earlier
version (converting it to the current types); a file of a newer version is refused with a
message saying so. Keys added to version 1 after its first files (`files`, `set.incomplete`,
`thresholds.copy.detail`, the nearest images' `patch`, `detail`, `detail_patch`,
`detail_local`, `verifier`, `aligned`, `decided_by` and `transform`, `timings.verifier_seconds`) are optional when read, so every version-1 report
written so far reads."""

from __future__ import annotations

import functools
import hashlib
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from conditioning.dataset import write_json_atomic

from .errors import ReportError

SCHEMA_VERSION = 1
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"  # the auditor's page: shows training images, never released
PUBLIC_HTML = "report-public.html"  # the same without any image: what a release may carry
AUDIT_LOG = "audit.log"

Verdict = Literal["pass", "fail"]
_typed = dataclass(frozen=True, kw_only=True)


def _optional(default: Any = None) -> Any:
    """A field that may be absent from the file, and is left out of it when None."""
    return field(default=default, metadata={"omit_none": True})


def _rest() -> Any:
    """A field holding every key of the object that no other field names, in the file's order;
    written back at its place among the fields."""
    return field(default_factory=dict, metadata={"rest": True})


@_typed
class Check:
    name: str
    passed: bool
    detail: str


@_typed
class ReportFiles:
    """The report directory's other files (absent from the first version-1 reports)."""

    auditor_html: str = REPORT_HTML
    public_html: str = PUBLIC_HTML
    log: str = AUDIT_LOG


@_typed
class SetInfo:
    name: str
    kind: str
    images: int
    incomplete: str | None = None  # why the set is incomplete (None: it is complete)


@_typed
class DatasetInfo:
    name: str
    content_hash: str
    image_size: tuple[int, ...]
    train_split: str
    holdout_split: str
    train_images: int
    train_images_deduplicated: int
    train_patients: int
    holdout_images: int
    holdout_patients: int


@_typed
class EncoderInfo:
    key: str
    params: Mapping[str, Any]
    trained_by: str
    objective: str
    training: Mapping[str, Any] = _rest()  # train_seconds, final_loss, train_images, ...
    reused_from_cache: bool
    stored_in: str

    @property
    def train_seconds(self) -> float | None:
        return self.training.get("train_seconds")

    @property
    def final_loss(self) -> float | None:
        return self.training.get("final_loss")


@_typed
class CopyThresholds:
    score: str
    alignment: str
    detail: str | None = _optional()
    rule: str
    quantile: float
    threshold: float
    holdout_images: int
    how_set: str
    standardiser: Mapping[str, Any]


@_typed
class DcrThresholds:
    limit: float
    rule: str
    how_set: str


@_typed
class MembershipThresholds:
    auc_limit: float
    tpr_at_1pct_fpr_limit: float
    rule: str
    how_set: str


@_typed
class MetadataThresholds:
    rule: str
    forbidden_strings: int
    forbidden_strings_too_short_to_search: int


@_typed
class Thresholds:
    copy: CopyThresholds
    dcr: DcrThresholds
    membership: MembershipThresholds
    metadata: MetadataThresholds


@_typed
class CopyDetection:
    synthetic_images: int
    flagged: int
    flagged_rate: float
    flagged_rate_ci95: tuple[float, float]
    expected_rate_without_copies: float
    distinct_training_patients_matched: int
    benjamini_hochberg_discoveries: int
    holdout_flag_rate_split_half: float | None
    synthetic_score_quantiles: Mapping[str, float]
    holdout_score_quantiles: Mapping[str, float]


@_typed
class Dcr:
    share_closer_to_train: float
    share_ci95: tuple[float, float]
    reference_size: int
    repeats: int
    details: Mapping[str, Any] = _rest()  # medians, what distance


@_typed
class Roc:
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.fpr) != len(self.tpr):
            raise ValueError(f"fpr has {len(self.fpr)} points, tpr {len(self.tpr)}")


@_typed
class Attack:
    """A membership-inference attack's outcome (DOMIAS on the set, or one on the model)."""

    auc: float
    auc_ci95: tuple[float, float]
    tpr_at_1pct_fpr: float
    tpr_at_1pct_fpr_ci95: tuple[float, float]
    members: int
    nonmembers: int
    roc: Roc
    details: Mapping[str, Any] = _rest()  # method, per-timestep AUC, score, ...


@_typed
class ModelMembership:
    """The attacks on the model, or why none ran (`skipped`)."""

    timesteps: tuple[int, ...] | None = _optional()
    attacks: Mapping[str, Attack] | None = _optional()
    strongest: str | None = _optional()
    model: Mapping[str, Any] | None = _optional()  # which model run was attacked
    reused: str | None = _optional()  # taken over from the audit of the unfiltered set
    skipped: str | None = _optional()

    def __post_init__(self) -> None:
        if (self.attacks is None) == (self.skipped is None):
            raise ValueError("needs either 'attacks' (the model was attacked) or 'skipped'")

    @property
    def ran(self) -> bool:
        return self.attacks is not None


@_typed
class MetadataSummary:
    files_scanned: int
    failures: int
    warnings: int


@_typed
class Summary:
    copy_detection: CopyDetection
    dcr: Dcr
    domias: Attack
    model_membership: ModelMembership
    metadata: MetadataSummary


@_typed
class MetadataFinding:
    file: str
    kind: str
    detail: str
    severity: Literal["fail", "warning"]


@_typed
class Transform:
    """How a synthetic image sits on the training image the registration aligned it with."""

    mirror: bool
    rotation_deg: float
    scale: float
    shift_px: tuple[float, float]


@_typed
class Nearest:
    """One of a synthetic image's nearest training images (one per training patient)."""

    id: str
    score: float
    embedding_cosine: float
    ncc: float
    patch: float | None = None
    detail: float | None = None
    detail_patch: float | None = None
    detail_local: float | None = _optional()  # the same windows, anatomy projected out of each
    verifier: float | None = _optional()  # the pair verifier's logit (each image's strongest pair)
    aligned: float | None = _optional()  # its logit at the aligner's alignment (3 nearest)
    decided_by: str | None = _optional()  # the score the combined score is (Standardiser)
    transform: Transform | None = _optional()  # where that score was measured

    def local_scores(self) -> list[tuple[str, float]]:
        """The patch and detail scores measured, as (label, value)."""
        named = (
            ("patch", self.patch),
            ("detail", self.detail),
            ("detail patch", self.detail_patch),
            ("detail local", self.detail_local),
            ("verifier logit", self.verifier),
            ("verifier logit, learned alignment", self.aligned),
        )
        return [(label, value) for label, value in named if value is not None]


@_typed
class Sample:
    file: str
    flagged: bool
    score: float
    p_value: float
    nearest: tuple[Nearest, ...]


@_typed
class Timings:
    """Wall seconds of each step of the audit, and of the whole."""

    read_seconds: float
    encoder_seconds: float
    verifier_seconds: float | None = _optional()  # the pair verifier's and the aligner's (trained
    # or read; reports before them: none)
    copy_detection_seconds: float
    data_attack_seconds: float
    model_mia_seconds: float | None = _optional()  # only when the model was attacked here
    metadata_seconds: float
    total_seconds: float


@_typed
class FilteredAudit:
    """The audit of the set without its flagged images (run_audit's filtered_report). Not in
    report.json: that file is written before the filtered copy exists."""

    set: str
    report: str
    verdict: Verdict
    reasons: tuple[str, ...]
    images: int


@_typed
class AuditReport:
    """One audit of one synthetic set: what run_audit returns, report.json holds and
    read_report gives back."""

    schema_version: ClassVar[int] = SCHEMA_VERSION
    tool: str
    created: str
    verdict: Verdict
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    set_sha256: str
    files: ReportFiles = field(default_factory=ReportFiles)
    set: SetInfo
    dataset: DatasetInfo
    encoder: EncoderInfo
    thresholds: Thresholds
    summary: Summary
    metadata_findings: tuple[MetadataFinding, ...]
    samples: tuple[Sample, ...]
    timings: Timings
    filtered: FilteredAudit | None = _optional()

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def flagged_files(self) -> list[str]:
        """The set's files the copy detection flagged, in the set's order."""
        return [s.file for s in self.samples if s.flagged]

    def to_json(self) -> dict[str, Any]:
        """The report.json object: the same keys, order and values as the file."""
        return {"schema_version": SCHEMA_VERSION, **to_json(self)}


def to_json(value: Any) -> Any:
    """A typed section (or any value of one) as JSON values, keys in the file's order."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    out: dict[str, Any] = {}
    for name, how in _layout(type(value)):
        item = getattr(value, name)
        if how == "rest":
            out.update(to_json(item))
        elif item is not None or how != "omit_none":
            out[name] = to_json(item)
    return out


@functools.cache
def _layout(cls: type) -> tuple[tuple[str, str], ...]:
    """A section's fields in the file's order, each with how it is written ("rest",
    "omit_none" or "always")."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a JSON value nor a report section")
    return tuple(
        (
            f.name,
            "rest"
            if f.metadata.get("rest")
            else "omit_none"
            if f.metadata.get("omit_none")
            else "always",
        )
        for f in fields(cls)
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return "a list" if isinstance(value, list | tuple) else "an object"


# Where a value sits, built only when an error names it: None (the top), or (parent, key) with
# an int key for a list item.
Where = tuple | None


def _field_name(where: Where) -> str:
    if where is None:
        return ""
    parent, key = where
    head = _field_name(parent)
    if isinstance(key, int):
        return f"{head}[{key}]"
    return f"{head}.{key}" if head else str(key)


class _Reader:
    """Checks JSON values against the types above; errors name `source` and the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: Where, problem: str) -> ReportError:
        return ReportError(self.source, _field_name(where) or "(top level)", problem)

    def section(self, cls: type, data: Any, where: Where) -> Any:
        if not isinstance(data, Mapping):
            raise self.fail(where, f"expected an object, found {_kind(data)}")
        plan = _plan(cls)
        values = {}
        for name, check, required in plan.fields:
            if name in data:
                values[name] = check(self, data[name], (where, name))
            elif required:
                raise self.fail((where, name), "missing")
        if plan.rest is not None:
            values[plan.rest] = {k: v for k, v in data.items() if k not in plan.names}
        try:
            return cls(**values)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None


_Checker = Callable[[_Reader, Any, Where], Any]


class _Plan(typing.NamedTuple):
    """How to read a section: (name, checker, required) per field, their names, and the field
    holding the other keys (None if the section has none)."""

    fields: tuple
    names: frozenset
    rest: str | None


@functools.cache
def _plan(cls: type) -> _Plan:
    hints, plan, rest = typing.get_type_hints(cls), [], None
    for f in fields(cls):
        if f.metadata.get("rest"):
            rest = f.name
        else:
            required = f.default is MISSING and f.default_factory is MISSING
            plan.append((f.name, _checker(hints[f.name]), required))
    return _Plan(tuple(plan), frozenset(name for name, _, _ in plan), rest)


@functools.cache
def _checker(hint: Any) -> _Checker:
    """A function (reader, value, where) -> the value as the field holds it, for a type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        check = _checker(inner)
        return lambda r, v, where: None if v is None else check(r, v, where)
    if is_dataclass(hint):
        return lambda r, v, where: r.section(hint, v, where)
    if origin is tuple:
        return _sequence_checker(args)
    if origin in (Mapping, dict):
        item = _checker(args[1])

        def mapping(r: _Reader, v: Any, where: Where) -> dict:
            if not isinstance(v, Mapping):
                raise r.fail(where, f"expected an object, found {_kind(v)}")
            return {str(k): item(r, x, (where, k)) for k, x in v.items()}

        return mapping
    if hint is Any:
        return lambda r, v, where: v
    return _scalar_checker(hint)


def _sequence_checker(args: tuple) -> _Checker:
    """A list read as a tuple: of any length (tuple[X, ...]) or of exactly len(args)."""
    items = None if args[-1] is Ellipsis else [_checker(a) for a in args]
    item = _checker(args[0])

    def sequence(r: _Reader, v: Any, where: Where) -> tuple:
        if not isinstance(v, list | tuple):
            raise r.fail(where, f"expected a list, found {_kind(v)}")
        if items is None:
            return tuple(item(r, x, (where, i)) for i, x in enumerate(v))
        if len(v) != len(items):
            raise r.fail(where, f"expected a list of {len(items)}, found {len(v)} item(s)")
        return tuple(c(r, x, (where, i)) for i, (c, x) in enumerate(zip(items, v, strict=True)))

    return sequence


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_SCALARS = {  # type: (test, what the error says was expected)
    str: (lambda v: isinstance(v, str), "a string"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: _number(v) and isinstance(v, int), "an integer"),
    float: (_number, "a number"),  # an integer is a number too (kept as written)
}


def _scalar_checker(hint: Any) -> _Checker:
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        test = allowed.__contains__
        wanted = "one of " + ", ".join(json.dumps(a) for a in allowed)
    else:
        test, wanted = _SCALARS[hint]

    def scalar(r: _Reader, v: Any, where: Where) -> Any:
        if not test(v):
            raise r.fail(where, f"expected {wanted}, found {_kind(v)}")
        return v

    return scalar


def section_from_json(cls: type, data: Any, source: str) -> Any:
    """A section (any of the types above) from JSON values, checked like a file's: how the audit
    takes in the measurements other modules return as dicts."""
    return _Reader(source).section(cls, data, None)


def report_from_json(data: Any, source: str) -> AuditReport:
    """The report in a report.json object, of any version this code reads (see the module's
    version rule); ReportError names `source` and the field otherwise."""
    reader, where = _Reader(source), (None, "schema_version")
    if not isinstance(data, Mapping):
        raise reader.fail(None, f"expected an object, found {_kind(data)}")
    if "schema_version" not in data:
        raise reader.fail(where, "missing: not an audit report")
    version = data["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise reader.fail(where, f"expected an integer, found {_kind(version)}")
    if version > SCHEMA_VERSION:
        raise reader.fail(
            where,
            f"{version} is newer than this RadSynth reads ({SCHEMA_VERSION} and earlier): "
            "update RadSynth to read this report",
        )
    if version < 1:
        raise reader.fail(where, f"unknown version {version}")
    return reader.section(AuditReport, data, None)


def report_path(path: str | Path) -> Path:
    """The report.json a path names: the path itself when it ends in .json, else the file in
    that report directory."""
    path = Path(path)
    return path if path.suffix == ".json" else path / REPORT_JSON


def read_report(path: str | Path) -> AuditReport:
    """The report in `path` (a report directory or its report.json), checked as it is read."""
    path = report_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(path, "", "missing: no audit report was written here") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(path, "", f"unreadable report ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(path, "", f"not valid JSON ({exc})") from None
    return report_from_json(data, str(path))


def write_report(path: str | Path, report: AuditReport) -> Path:
    """Write the report (to `path`, a report directory or its report.json) atomically: a
    temporary sibling renamed into place. Returns the file written."""
    path = report_path(path)
    write_json_atomic(path, report.to_json())
    return path


def report_digest(report: AuditReport) -> str:
    """A short hash of a report, for lineage records: the same as of the JSON object it is."""
    return hashlib.sha256(json.dumps(report.to_json(), sort_keys=True).encode()).hexdigest()
