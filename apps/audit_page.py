"""Audit page: releases and audit reports under the data root with their verdicts.

Clinician view (default): verdict, numeric summary, a score histogram. Auditor view (started
with RADSYNTH_AUDITOR=1 or `-- --auditor`): also the per-sample table with nearest training
ids and the full report.html with its galleries, which show training images.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from privacy_audit.errors import AuditError
from privacy_audit.report import REPORT_HTML, REPORT_JSON, AuditReport, read_report

from .audit_reports import (
    auditor_samples,
    copy_threshold,
    inline_html,
    public_checks,
    public_summary,
    release_detectability,
    release_summary,
    report_summary,
    roc_curves,
    sample_scores,
    score_histogram,
)
from .config import AppConfig
from .paths import PathRefused, inside_root
from .ui import catalog, pick_path

PASSING = {"pass", "passed", "release", "approved", "ok"}


@st.cache_data(max_entries=64, show_spinner=False)
def _report_row(root: str, rel: str, stamp: int) -> dict:
    row = report_summary(Path(root) / rel)
    return {**row, "report": rel}


def _release_row(config: AppConfig, rel: str) -> dict:
    try:
        return release_summary(inside_root(config.data_root, rel))
    except PathRefused as exc:
        return {"release": Path(rel).name, "verdict": f"refused: {exc}"}


def _verdict(verdict: str) -> None:
    text = f"Verdict: {verdict}"
    if verdict.strip().lower() in PASSING:
        st.success(text)
    elif verdict.strip().lower() in {"fail", "failed", "block", "blocked", "rejected"}:
        st.error(text)
    else:
        st.warning(text)


def _detectability(release) -> None:
    """How easily a classifier tells this set from real images (no image involved)."""
    detect = release_detectability(release)
    if detect is None:
        return
    low, high = detect["interval"]
    st.metric("Detectability (real-vs-synthetic AUROC)", f"{detect['auroc']:.3f}")
    st.caption(
        f"95% interval {low:.3f}-{high:.3f}; 0.5 = a classifier cannot tell these images from "
        "real ones, 1 = every image gives itself away. "
        + ", ".join(f"{k} {v['auroc']:.3f}" for k, v in detect.get("per_class", {}).items())
    )


def _release_details(config: AppConfig, release) -> None:
    release = inside_root(config.data_root, release)  # refuses links leading out of the root
    _detectability(release)
    datasheet = release / "datasheet.md"
    if datasheet.is_file():
        with st.expander("Datasheet"):
            st.markdown(datasheet.read_text(encoding="utf-8"))
    lineage = release / "lineage.json"
    if lineage.is_file():
        with st.expander("Lineage"):
            st.json(json.loads(lineage.read_text(encoding="utf-8")))


def _auditor_details(report: AuditReport, report_dir) -> None:
    st.subheader("Auditor view: per-sample matches and galleries")
    rows = auditor_samples(report)
    if rows:
        st.dataframe(rows, hide_index=True)
    with st.expander("Full report.json"):
        st.json(report.to_json(), expanded=False)
    if (report_dir / REPORT_HTML).is_file():
        st.iframe(inline_html(report_dir), height=900, alt="privacy audit report")
    else:
        st.info(f"{report_dir / REPORT_HTML} not found.")


def _figures(report: AuditReport, scores) -> None:
    """Summary figures drawn from the report's numbers: no image is involved."""
    histogram = score_histogram(scores)
    if histogram:
        st.caption(
            f"Copy scores of the synthetic images; flagged above {copy_threshold(report):.3f}"
        )
        st.bar_chart(histogram, x="score", y="samples")
    roc = roc_curves(report)
    if roc:
        st.caption("Membership-inference ROC curves (the diagonal is chance)")
        st.line_chart(roc, x="false positive rate", y="true positive rate", color="attack")


def render(config: AppConfig) -> None:
    st.header("Audit")
    st.caption(f"View: {config.role}")
    found = catalog(config)
    if found.releases:
        st.subheader("Releases")
        rows = [_release_row(config, r) for r in found.releases]
        st.dataframe(rows, hide_index=True)
    st.subheader("Audit reports")
    if not found.reports:
        st.info(f"No audit report ({REPORT_JSON}) under {config.data_root}.")
    else:
        rows = []
        for rel in found.reports:
            path = inside_root(config.data_root, rel)
            rows.append(_report_row(str(config.data_root), rel, path.stat().st_mtime_ns))
        st.dataframe(rows, hide_index=True)
    path = pick_path(config, "Audit report", found.reports, key="audit_report")
    if path is None:
        return
    if path.is_dir():
        path = inside_root(config.data_root, path / REPORT_JSON)
    try:
        report = read_report(path)
    except AuditError as exc:  # names the file and the field at fault
        st.error(f"Cannot read this audit report: {exc}")
        return
    report_dir = inside_root(config.data_root, path.parent)  # report.html etc. stay inside
    _verdict(report.verdict)
    scores, flagged = sample_scores(report)
    cols = st.columns(2)
    cols[0].metric("Samples audited", int(scores.size))
    cols[1].metric("Flagged", flagged)
    checks = public_checks(report)
    if checks:
        st.dataframe(checks, hide_index=True)
    summary = public_summary(report)
    if summary:
        with st.expander("Summary measures"):
            st.dataframe(
                [{"measure": k, "value": str(v)} for k, v in summary.items()], hide_index=True
            )
    _figures(report, scores)
    if report_dir.name == "audit" and report_dir.parent.parent.name == "releases":
        _release_details(config, report_dir.parent)
    if config.auditor:
        _auditor_details(report, report_dir)
    else:
        st.info(
            "Clinician view: per-sample matches and the report's galleries show training images "
            "and open only in auditor mode (start the app with RADSYNTH_AUDITOR=1)."
        )
