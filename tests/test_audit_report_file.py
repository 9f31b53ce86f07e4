"""report.json through privacy_audit.report: a version-1 file written before the module existed
reads and writes back byte for byte, a report round-trips, every unusable file is refused naming
the file and the field, a newer version is refused, and the gate decides as before."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from privacy_audit.errors import GateError, ReportError
from privacy_audit.gate import check_release
from privacy_audit.imageset import set_sha256
from privacy_audit.report import (
    SCHEMA_VERSION,
    FilteredAudit,
    ModelMembership,
    read_report,
    report_digest,
    report_from_json,
    write_report,
)

from .audit_data import REPORT_V1, report_v1, save_png


def _write(path: Path, data) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path / "report.json"


def test_version_1_file_of_the_former_writer_reads_and_writes_back_byte_for_byte(tmp_path):
    report = read_report(REPORT_V1)
    assert report.schema_version == SCHEMA_VERSION == 1
    assert report.verdict == "fail" and not report.passed
    assert report.summary.copy_detection.flagged == 2
    assert report.summary.copy_detection.flagged_rate_ci95[1] == 0.700006684861608
    assert report.flagged_files() == ["images/syn000004.png", "images/syn000005.png"]
    nearest = report.samples[5].nearest[0]
    assert nearest.id == "img000001" and nearest.transform.mirror is False
    assert nearest.local_scores()[0][0] == "patch"
    mia = report.summary.model_membership
    assert (
        mia.ran and set(mia.attacks) == {"loss", "stepwise"} and mia.model == {"run": "tiny-model"}
    )
    assert mia.attacks["loss"].details["auc_per_timestep"]["5"] == 0.98375
    assert report.encoder.train_seconds == 2.2 and report.encoder.training["train_patients"] == 100
    assert report.timings.total_seconds == 5.14 and report.timings.model_mia_seconds == 0.03
    assert report.metadata_findings[0].severity == "fail"
    written = write_report(tmp_path, report)
    assert written == tmp_path / "report.json"
    assert written.read_bytes() == REPORT_V1.read_bytes()
    assert report.to_json() == report_v1()


def test_round_trip_of_a_changed_report(tmp_path):
    report = read_report(REPORT_V1)
    changed = replace(
        report,
        verdict="pass",
        reasons=("all checks passed",),
        summary=replace(report.summary, model_membership=ModelMembership(skipped="no model")),
        timings=replace(report.timings, model_mia_seconds=None),
        filtered=FilteredAudit(
            set="kept", report="kept-report", verdict="pass", reasons=("fine",), images=4
        ),
    )
    write_report(tmp_path / "r" / "report.json", changed)
    again = read_report(tmp_path / "r")
    assert again == changed and again != report
    raw = json.loads((tmp_path / "r" / "report.json").read_text())
    assert raw["summary"]["model_membership"] == {"skipped": "no model"}
    assert "model_mia_seconds" not in raw["timings"] and raw["filtered"]["images"] == 4
    assert list(raw)[0] == "schema_version" and list(raw)[-2:] == ["timings", "filtered"]


def test_digest_is_the_former_digest_of_the_json():
    former = hashlib.sha256(json.dumps(report_v1(), sort_keys=True).encode()).hexdigest()
    report = read_report(REPORT_V1)
    assert report_digest(report) == former
    assert report_digest(replace(report, verdict="pass")) != former


def test_first_version_1_layout_reads(tmp_path):
    """The keys version 1 gained after its first reports are optional when read."""
    data = report_v1()
    del data["files"], data["set"]["incomplete"], data["thresholds"]["copy"]["detail"]
    for sample in data["samples"]:
        for near in sample["nearest"]:
            for key in ("patch", "detail", "detail_patch", "transform"):
                near.pop(key, None)
    report = read_report(_write(tmp_path, data))
    assert report.files.auditor_html == "report.html" and report.set.incomplete is None
    assert report.thresholds.copy.detail is None
    near = report.samples[5].nearest[0]
    assert near.patch is None and near.transform is None and near.local_scores() == []


def _set_path(data: dict, path: list, value) -> None:
    for key in path[:-1]:
        data = data[key]
    if value is KeyError:
        del data[path[-1]]
    else:
        data[path[-1]] = value


BAD = [
    (["summary", "copy_detection", "flagged"], KeyError, "summary.copy_detection.flagged", "missing"),
    (["samples", 3, "score"], "high", "samples[3].score", "expected a number, found a string ('high')"),
    (["samples", 0, "flagged"], 1, "samples[0].flagged", "expected true or false, found a number (1)"),
    (["samples", 5, "nearest", 0, "id"], KeyError, "samples[5].nearest[0].id", "missing"),
    (["verdict"], "maybe", "verdict", 'expected one of "pass", "fail"'),
    (["dataset", "train_patients"], 1.5, "dataset.train_patients", "expected an integer"),
    (["summary", "copy_detection", "flagged_rate_ci95"], [0.1], "summary.copy_detection.flagged_rate_ci95", "expected a list of 2"),
    (["summary", "model_membership", "attacks", "loss", "auc"], None, "summary.model_membership.attacks.loss.auc", "expected a number, found null"),
    (["summary", "model_membership"], {"strongest": "loss"}, "summary.model_membership", "needs either 'attacks'"),
    (["summary", "domias", "roc", "tpr"], [0.0, 1.0], "summary.domias.roc", "fpr has 101 points, tpr 2"),
    (["thresholds"], [], "thresholds", "expected an object, found a list"),
    (["timings", "total_seconds"], KeyError, "timings.total_seconds", "missing"),
    (["reasons"], "one reason", "reasons", "expected a list, found a string"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "field", "problem"), BAD)
def test_each_unusable_field_is_named_with_the_file(tmp_path, path, value, field, problem):
    data = report_v1()
    _set_path(data, path, value)
    file = _write(tmp_path, data)
    with pytest.raises(ReportError) as caught:
        read_report(tmp_path)
    assert caught.value.field == field and caught.value.path == str(file)
    assert str(caught.value).startswith(f"{file}: {field}: ") and problem in str(caught.value)


def test_missing_unreadable_and_foreign_files_are_named(tmp_path):
    with pytest.raises(ReportError, match=r"nowhere/report\.json: missing"):
        read_report(tmp_path / "nowhere")
    file = tmp_path / "bad" / "report.json"
    file.parent.mkdir()
    file.write_text('{"schema_version": 1,')
    with pytest.raises(ReportError, match=r"bad/report\.json: not valid JSON"):
        read_report(file)
    cases = [
        ([1, 2], "(top level): expected an object, found a list"),
        ({"verdict": "pass"}, "schema_version: missing: not an audit report"),
        ({**report_v1(), "schema_version": "1"}, "schema_version: expected an integer"),
        ({**report_v1(), "schema_version": 0}, "schema_version: unknown version 0"),
    ]
    for data, message in cases:
        written = _write(tmp_path / "foreign", data)
        with pytest.raises(ReportError) as caught:
            read_report(written)
        assert str(caught.value).startswith(f"{written}: {message}")


def test_newer_schema_version_is_refused(tmp_path):
    file = _write(tmp_path, {**report_v1(), "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ReportError) as caught:
        read_report(tmp_path)
    assert caught.value.field == "schema_version"
    assert str(caught.value) == (
        f"{file}: schema_version: {SCHEMA_VERSION + 1} is newer than this RadSynth reads "
        f"({SCHEMA_VERSION} and earlier): update RadSynth to read this report"
    )
    with pytest.raises(ReportError, match="is newer"):
        report_from_json({**report_v1(), "schema_version": 7}, "in memory")


def test_a_failed_write_leaves_the_former_report(tmp_path):
    report = read_report(REPORT_V1)
    write_report(tmp_path, report)
    # an integer too long to print: json.dump fails half way through the file
    broken = replace(report, samples=(replace(report.samples[0], score=10**5000),))
    with pytest.raises(ValueError, match="digits"):
        write_report(tmp_path, broken)
    assert (tmp_path / "report.json").read_bytes() == REPORT_V1.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_gate_decisions_on_typed_reports(tmp_path):
    """Pass only for a passing report of the set as it is; a malformed report is refused by
    name, as a missing one is."""
    data = report_v1()
    synthetic = tmp_path / "set"
    for i in range(3):
        save_png(synthetic / f"syn{i}.png", np.full((8, 8), i / 4))
    data.update(verdict="pass", reasons=["all checks passed"], set_sha256=set_sha256(synthetic))
    _write(tmp_path / "pass", data)
    check_release(synthetic, tmp_path / "pass")
    _write(tmp_path / "fail", {**data, "verdict": "fail", "reasons": ["2 copies"]})
    with pytest.raises(GateError, match=r"failed \(2 copies\)"):
        check_release(synthetic, tmp_path / "fail")
    _write(tmp_path / "other", {**data, "set_sha256": "0" * 64})
    with pytest.raises(GateError, match="changed since it was audited"):
        check_release(synthetic, tmp_path / "other")
    del data["samples"]
    _write(tmp_path / "malformed", data)
    with pytest.raises(GateError, match=r"release refused: .*report\.json: samples: missing"):
        check_release(synthetic, tmp_path / "malformed")


def test_memorization_row_from_a_typed_report(tmp_path):
    from pipelines.memorization import _arm_row

    report = read_report(REPORT_V1)
    row = _arm_row("tiny", "runs/tiny/model", {"steps": 9, "stopped_by": "steps"}, report, tmp_path)
    assert (row["samples"], row["flagged"], row["train_images"], row["train_patients"]) == (
        6,
        2,
        110,
        100,
    )
    assert row["flagged_rate"] == 2 / 6 and row["threshold"] == 1.8841
    assert row["audit_seconds"] == 5.14 and row["distinct_training_patients_matched"] == 1


def test_lineage_and_datasheet_from_typed_reports(tmp_path):
    """The release's lineage records both audits, and its datasheet the summary, as they did
    from the JSON dicts."""
    from types import SimpleNamespace

    from pipelines.release.datasheet import _audit_lines, _flatten
    from pipelines.release.lineage import build_lineage, file_sha256

    _write(tmp_path / "final", {**report_v1(), "verdict": "pass"})
    _write(tmp_path / "screening", report_v1())
    inputs = SimpleNamespace(
        name="r1",
        report_dir=tmp_path / "final",
        screening_report_dir=tmp_path / "screening",
        dataset_dir=None,
        model_dir=None,
        params_file=None,
    )
    report = read_report(tmp_path / "final")
    lineage = build_lineage(inputs, synthetic_sha256="abc", report=report)
    assert lineage["audit"] == {
        "verdict": "pass",
        "report_sha256": file_sha256(tmp_path / "final" / "report.json"),
        "schema_version": 1,
    }
    assert lineage["screening_audit"] == {
        "verdict": "fail",
        "report_sha256": file_sha256(tmp_path / "screening" / "report.json"),
        "generated_images": 6,
        "flagged_and_removed": 2,
        "set_sha256": report_v1()["set_sha256"],
    }
    lines = _audit_lines(report, lineage)
    former: list[str] = []
    _flatten("", report_v1()["summary"], former)
    assert lines[1] == "- verdict: **pass**" and "2 of 6 generated images" in lines[2]
    assert lines[3:-2] == former and "- copy_detection.flagged: 2" in former
