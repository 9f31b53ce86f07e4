"""The app's only way to turn a name into a path: inside the data root or refused.

Symlinks are resolved before the check, so a link under the root that points elsewhere is
refused too; any '..' component is refused outright, even one that would land back inside.
"""

from __future__ import annotations

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
    return resolved


def relative_name(root: Path, path: Path) -> str:
    """How a path is shown and stored: relative to the data root."""
    return path.resolve().relative_to(root.resolve()).as_posix() or "."
