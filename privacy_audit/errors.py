"""Errors of the audit: bad input names the file and the problem; the gate says why it refuses."""

from __future__ import annotations

from pathlib import Path


class AuditError(ValueError):
    """An audit input cannot be used (empty set, unreadable image, size mismatch, ...)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ReportError(AuditError):
    """A report.json cannot be used: `field` names the key at fault (`samples[3].score`), empty
    when the whole file is (missing, not JSON)."""

    def __init__(self, path: str | Path, field: str, problem: str):
        self.field = field
        super().__init__(path, f"{field}: {problem}" if field else problem)


class GateError(RuntimeError):
    """A synthetic set may not be released: no passing audit report for it as it is now."""
