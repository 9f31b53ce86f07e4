"""Atomic writes shared by every layer: a file goes to a temporary sibling and is renamed; a
directory is assembled in a hidden sibling and swapped into place, so readers never see half of
one and an interrupted run leaves the previous version intact."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON to a temporary file beside the target, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def staging_dir(out: str | Path) -> Path:
    """A new hidden sibling of `out` to assemble it in (`.NAME.<random>.partial`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(out)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))


def replace_directory(stage: str | Path, out: str | Path) -> None:
    """Swap a finished staging directory into place. An existing `out` is moved aside first and
    removed only once the new one is in; `recover_directory` undoes a kill in between."""
    stage, out = Path(stage), Path(out)
    if out.exists():
        previous = out.with_name(f".{out.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(out, previous)
        try:
            os.replace(stage, out)
        except BaseException:
            os.replace(previous, out)
            raise
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(stage, out)


def recover_directory(out: str | Path) -> None:
    """Put back a previous version left aside by an interrupted swap; drop stale stages."""
    out = Path(out)
    previous = out.with_name(f".{out.name}.previous")
    if previous.exists() and not out.exists():
        os.replace(previous, out)
    for leftover in out.parent.glob(f".{out.name}.*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)


def publish_permissions(root: str | Path) -> None:
    """Give a staged directory the modes a normal tool would (0777/0666 less the umask):
    staging and temporary files are created private (0700/0600), which would keep a release
    from the people it is shared with."""
    mask = os.umask(0)
    os.umask(mask)
    root = Path(root)
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(folder) / name, 0o666 & ~mask)
