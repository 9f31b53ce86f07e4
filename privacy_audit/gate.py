"""The release gate: a set may leave only with a passing audit report made for it as it is now."""

from __future__ import annotations

from pathlib import Path

from .errors import AuditError, GateError
from .imageset import set_sha256
from .report import read_report


def check_release(set_dir: str | Path, report_dir: str | Path) -> None:
    """Return silently if `report_dir` holds a passing audit of `set_dir` with its current
    content hash; otherwise raise GateError saying why the release is refused."""
    try:
        report = read_report(report_dir)
    except AuditError as exc:
        raise GateError(f"release refused: {exc}") from None
    if not report.passed:
        reasons = "; ".join(report.reasons or ["no reason recorded"])
        raise GateError(f"release refused: the audit in {report_dir} failed ({reasons})")
    recorded = report.set_sha256
    try:
        current = set_sha256(set_dir)
    except AuditError as exc:
        raise GateError(f"release refused: {exc}") from None
    if recorded != current:
        raise GateError(
            f"release refused: {set_dir} changed since it was audited (content hash "
            f"{current[:12]}... differs from the audited {recorded[:12]}...): audit it again"
        )
