"""What the audit page takes from a report: clinician-safe summary, checks, embedded figures."""

from __future__ import annotations

import base64

from apps.audit_reports import inline_html, public_checks, public_summary, roc_curves

REPORT = {
    "verdict": "fail",
    "checks": [
        {"name": "copy_detection", "passed": False, "detail": "2 of 100 flagged"},
        {"name": "metadata", "passed": False, "detail": "syn1.png: found images/train/img7.png"},
    ],
    "summary": {
        "copy_detection": {"flagged": 2, "flagged_rate_ci95": [0.01, 0.07], "nearest": "img7"},
        "domias": {"auc": 0.51, "roc": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}},
        "note": "img7",
    },
}


def test_clinician_summary_keeps_numbers_and_drops_names():
    summary = public_summary(REPORT)
    assert summary == {
        "copy_detection.flagged": 2,
        "copy_detection.flagged_rate_ci95": "0.01 - 0.07",
        "domias.auc": 0.51,
    }
    checks = public_checks(REPORT)
    assert [c["passed"] for c in checks] == [False, False]
    assert checks[0]["detail"] == "2 of 100 flagged"
    assert "img7" not in str(checks)
    assert [r["true positive rate"] for r in roc_curves(REPORT)] == [0.0, 1.0]


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
