"""Atomic writes shared by every layer: a file goes to a temporary sibling and is renamed; a
directory is assembled in a hidden sibling and swapped into place, so readers never see half of
one and an interrupted run leaves the previous version intact."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write to (for libraries that take a file name); renamed
    onto `path` when the block succeeds, removed when it fails. It keeps `path`'s suffixes, so a
    library that picks the format from the name (nibabel's .nii.gz) picks the right one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """`open(path, mode)` that replaces `path` only once the block finished writing."""
    with atomic_path(path) as tmp:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": newline}
        with open(tmp, mode, **text) as handle:
            yield handle


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON to a temporary file beside the target, then rename."""
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


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
