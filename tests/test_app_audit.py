"""What the audit page takes from a report: clinician-safe summary, checks, embedded figures."""

from __future__ import annotations

import base64
import json

from apps.audit_reports import (
    auditor_samples,
    inline_html,
    public_checks,
    public_summary,
    report_summary,
    roc_curves,
    sample_scores,
)
from privacy_audit.report import report_from_json, write_report
from tests.audit_data import report_v1


def _report_naming_a_training_image():
    """The version-1 fixture report with a training image's id wherever the schema takes a
    string: a check's detail, the DOMIAS method and the attacked model's name."""
    data = report_v1()
    data["checks"][1]["detail"] = "syn1.png: found images/train/img7.png"
    data["summary"]["domias"]["method"] = "k-NN, nearest img7"
    data["summary"]["model_membership"]["model"] = {"run": "img7", "steps": 12}
    return report_from_json(data, "test report")


def test_clinician_summary_keeps_numbers_and_drops_names():
    report = _report_naming_a_training_image()
    summary = public_summary(report)
    assert summary["copy_detection.flagged"] == 2
    assert summary["copy_detection.flagged_rate_ci95"] == "0.09677 - 0.7"
    assert summary["domias.auc"] == 0.464 and summary["metadata.failures"] == 1
    assert "img7" not in str(summary) and "domias.method" not in summary
    assert summary["model_membership.model.steps"] == 12  # a number, so kept
    assert not any(k.startswith("model_membership.attacks") for k in summary)  # deeper than 3
    assert all(isinstance(v, int | float) or " - " in v for v in summary.values())
    checks = public_checks(report)
    assert [c["passed"] for c in checks] == [False, False, True, True, False, False]
    assert checks[0]["detail"].startswith("2 of 6 synthetic images")
    assert "img7" not in str(checks)
    rows = roc_curves(report)
    assert {r["attack"] for r in rows} == {"DOMIAS (set)", "model loss", "model stepwise"}
    assert len(rows) == sum(
        len(a.roc.fpr) for a in report.summary.model_membership.attacks.values()
    ) + len(report.summary.domias.roc.fpr)
    scores, flagged = sample_scores(report)
    assert flagged == 2 and scores.size == 6
    assert auditor_samples(report)[5]["nearest training ids"] == "img000001, img000003, img000069"


def test_report_rows_read_the_typed_report_and_name_an_unusable_one(tmp_path):
    report = _report_naming_a_training_image()
    write_report(tmp_path / "good", report)
    row = report_summary(tmp_path / "good" / "report.json")
    assert (row["verdict"], row["set"], row["images"]) == ("fail", "tiny-set", 6)
    broken = report.to_json()
    del broken["set"]["images"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text(json.dumps(broken))
    row = report_summary(tmp_path / "bad" / "report.json")
    assert (
        row["verdict"].startswith("unreadable (")
        and "report.json: set.images: missing" in row["verdict"]
    )


def test_report_html_embeds_only_its_own_images(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    figure = b"\x89PNG fake"
    (report / "fig.png").write_bytes(figure)
    (tmp_path / "secret.png").write_bytes(b"secret")
    (report / "report.html").write_text(
        '<img src="fig.png"><img src="../secret.png"><img src="data:image/png;base64,AA==">'
    )
    html = inline_html(report)
    assert f'src="data:image/png;base64,{base64.b64encode(figure).decode()}"' in html
    assert '<img src="">' in html and "secret" not in html
    assert 'src="data:image/png;base64,AA=="' in html


def test_audit_page_names_an_unreadable_report(tmp_path, monkeypatch):
    """A report.json that does not read is listed as unreadable and opening it shows the file
    and the field at fault, not a traceback."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    broken = report_v1()
    del broken["samples"][0]["score"]
    (tmp_path / "audits" / "broken").mkdir(parents=True)
    (tmp_path / "audits" / "broken" / "report.json").write_text(json.dumps(broken))
    monkeypatch.setenv("RADSYNTH_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("RADSYNTH_READER_DB", str(tmp_path / "ratings.sqlite"))
    monkeypatch.delenv("RADSYNTH_AUDITOR", raising=False)
    at = AppTest.from_file(str(REPO / "apps" / "app.py"), default_timeout=90)
    at.session_state["page"] = "Audit"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    reports = next(d.value for d in at.dataframe if "report" in d.value.columns)
    (verdict,) = reports["verdict"].tolist()
    assert verdict.startswith("unreadable (") and "samples[0].score: missing" in verdict
    (error,) = [e.value for e in at.error]
    assert error.startswith("Cannot read this audit report: ")
    assert "audits/broken/report.json: samples[0].score: missing" in error
