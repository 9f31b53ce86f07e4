"""The one error type for a dataset that does not follow the format."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset file breaks the format; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
