"""Errors of the audit: bad input names the file and the problem; the gate says why it refuses."""

from __future__ import annotations

from pathlib import Path


class AuditError(ValueError):
    """An audit input cannot be used (empty set, unreadable image, size mismatch, ...)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class GateError(RuntimeError):
    """A synthetic set may not be released: no passing audit report for it as it is now."""
