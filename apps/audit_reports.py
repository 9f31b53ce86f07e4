"""Reading audit reports and releases for the audit page, and deciding what a clinician may see.

A report's galleries and per-sample rows name and show training images; the clinician view gets
only the verdict, numeric summary values and a score histogram computed here from the scores.
"""

from __future__ import annotations

import base64
import csv
import json
import mimetypes
import re
from pathlib import Path
from typing import Any

import numpy as np

from privacy_audit.report import REPORT_HTML, REPORT_JSON, AuditReport, read_report, to_json

from .paths import PathRefused, inside_root

_SRC = re.compile(r"""(src|href)=(["'])([^"']+)\2""", re.IGNORECASE)


def public_summary(report: AuditReport) -> dict[str, float | int | bool | str]:
    """Numeric and yes/no summary values (nested keys joined by '.'; *_ci95 pairs as 'lo - hi'):
    safe for the clinician view, since no id, name or path is a number."""
    out: dict[str, float | int | bool | str] = {}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, bool | int | float):
            out[prefix] = round(value, 4) if isinstance(value, float) else value
        elif (
            isinstance(value, list | tuple)
            and prefix.rsplit(".", 1)[-1].endswith("ci95")
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            out[prefix] = f"{value[0]:.4g} - {value[1]:.4g}"
        elif isinstance(value, dict) and depth < 3:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item, depth + 1)

    walk("", to_json(report.summary), 0)
    return out


def public_checks(report: AuditReport) -> list[dict[str, Any]]:
    """Each check's name and result; details only for the statistical checks (the metadata
    check's detail quotes file names and found strings, which may name training images)."""
    rows = []
    for check in report.checks:
        detail = check.detail
        if check.name == "metadata":
            detail = "see the metadata counts in the summary (details: auditor view)"
        rows.append({"check": check.name, "passed": check.passed, "detail": detail})
    return rows


def sample_scores(report: AuditReport) -> tuple[np.ndarray, int]:
    """The per-sample scores (the finite ones) and how many samples were flagged."""
    values = np.array([s.score for s in report.samples], dtype=float)
    return values[np.isfinite(values)], len(report.flagged_files())


def copy_threshold(report: AuditReport) -> float:
    return float(report.thresholds.copy.threshold)


def roc_curves(report: AuditReport) -> list[dict[str, Any]]:
    """Long-format rows (attack, fpr, tpr) of every attack's ROC curve in the summary."""
    summary = report.summary
    attacks = {"DOMIAS (set)": summary.domias}
    attacks.update({f"model {k}": v for k, v in (summary.model_membership.attacks or {}).items()})
    return [
        {"attack": name, "false positive rate": float(f), "true positive rate": float(t)}
        for name, entry in attacks.items()
        for f, t in zip(entry.roc.fpr, entry.roc.tpr, strict=True)
    ]


def auditor_samples(report: AuditReport) -> list[dict[str, Any]]:
    """Per-sample rows with the nearest training ids flattened (auditor view only)."""
    return [
        {
            "file": sample.file,
            "flagged": sample.flagged,
            "score": sample.score,
            "p_value": sample.p_value,
            "nearest training ids": ", ".join(n.id for n in sample.nearest),
        }
        for sample in report.samples
    ]


def score_histogram(scores: np.ndarray, bins: int = 20) -> list[dict[str, float]]:
    """Counts per score bin, ready for st.bar_chart (x = bin centre)."""
    if scores.size == 0:
        return []
    counts, edges = np.histogram(scores, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    return [
        {"score": round(float(c), 4), "samples": int(n)}
        for c, n in zip(centres, counts, strict=True)
    ]


def inline_html(report_dir: Path) -> str:
    """report.html with its local images embedded as data URIs (an iframe srcdoc cannot load
    relative files); files outside the report folder are not embedded."""
    html = inside_root(report_dir, REPORT_HTML).read_text(encoding="utf-8")

    def embed(match: re.Match) -> str:
        attribute, quote, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target, re.IGNORECASE):
            return match.group(0)
        try:
            path = inside_root(report_dir, target)
        except PathRefused:
            return f"{attribute}={quote}{quote}"
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if not path.is_file() or not mime.startswith("image/"):
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"{attribute}={quote}data:{mime};base64,{data}{quote}"

    return _SRC.sub(embed, html)


def release_detectability(release: Path) -> dict[str, Any] | None:
    """The release's detectability (evaluation/metrics.json, written by `radsynth release
    --evaluation`): AUROC, interval and per class; None when it was not measured."""
    path = release / "evaluation" / "metrics.json"
    if not path.is_file():
        return None
    try:
        detect = json.loads(path.read_text(encoding="utf-8")).get("detectability")
    except (OSError, json.JSONDecodeError):
        return None
    return detect if detect and isinstance(detect.get("auroc"), int | float) else None


def release_summary(release: Path) -> dict[str, Any]:
    """One row of the releases table: name, verdict, image count, what files it has."""
    report = release / "audit" / REPORT_JSON
    verdict = "no audit report"
    if report.is_file():
        try:
            verdict = read_report(report).verdict
        except ValueError as exc:  # AuditError: names the file and the field
            verdict = f"unreadable ({exc})"
    images = None
    manifest = release / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="", encoding="utf-8") as handle:
            images = max(sum(1 for _ in csv.reader(handle)) - 1, 0)
    return {
        "release": release.name,
        "verdict": verdict,
        "images": images,
        "detectability_auroc": (release_detectability(release) or {}).get("auroc"),
        "datasheet": (release / "datasheet.md").is_file(),
        "lineage": (release / "lineage.json").is_file(),
    }


def report_summary(path: Path) -> dict[str, Any]:
    """One row of the reports table: where, verdict, when, which set."""
    try:
        report = read_report(path)
    except ValueError as exc:  # AuditError: names the file and the field
        return {"report": str(path), "verdict": f"unreadable ({exc})"}
    return {
        "report": str(path),
        "verdict": report.verdict,
        "created": report.created,
        "set": report.set.name,
        "images": report.set.images,
    }
