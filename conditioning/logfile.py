"""Log files for long work: one file per run, next to its outputs, never holding source paths.
In the bottom layer so every layer (training, audit, CLI) attaches logs the same way."""

from __future__ import annotations

import logging
from pathlib import Path


def attach_log_file(path: str | Path, logger_name: str = "") -> logging.Handler:
    """Send records of `logger_name` (root by default) to `path` as well as the console."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler
