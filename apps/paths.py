"""The app's only way to turn a name into a path: inside the data root or refused.

Symlinks are resolved before the check, so a link under the root that points elsewhere is
refused too; any '..' component is refused outright, even one that would land back inside. A
folder is accepted only when no link anywhere inside it leads out of the root either: the app
opens the files of a model, dataset, set, report or release it was given, and each of them
must stay inside (a file-level link to /etc/passwd is refused like a folder-level one).
"""

from __future__ import annotations

import os
from pathlib import Path


class PathRefused(ValueError):
    """A path the app must not open; the message says why."""


def inside_root(root: Path, raw: str | Path) -> Path:
    """`raw` (absolute, or relative to the root) resolved and checked to lie under `root`."""
    text = str(raw).strip()
    if not text:
        raise PathRefused("no path given")
    candidate = Path(text).expanduser()
    if ".." in candidate.parts:
        raise PathRefused(f"{text}: paths with '..' are refused")
    root = root.resolve()
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise PathRefused(f"{text}: does not exist under the data root {root}") from None
    except (OSError, RuntimeError) as exc:  # loops, permissions
        raise PathRefused(f"{text}: cannot be resolved ({exc})") from None
    if not resolved.is_relative_to(root):
        raise PathRefused(f"{text}: outside the data root {root}; the app reads nothing else")
    if resolved.is_dir():
        _links_stay_inside(root, resolved, text)
    return resolved


def _links_stay_inside(root: Path, folder: Path, text: str) -> None:
    """Every symbolic link under `folder` must resolve inside `root`."""
    for current, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(current) / name
            if not path.is_symlink():
                continue
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(root):
                where = path.relative_to(folder).as_posix()
                raise PathRefused(
                    f"{text}: {where} is a link to a file outside the data root {root}; "
                    "the app reads nothing else"
                )


def relative_name(root: Path, path: Path) -> str:
    """How a path is shown and stored: relative to the data root."""
    return path.resolve().relative_to(root.resolve()).as_posix() or "."
